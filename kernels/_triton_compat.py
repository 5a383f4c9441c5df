"""What the kernels need from older Triton releases, in one place (supported: triton 3.6 to 3.9).

Only Triton's interpreter needs help, and only one thing: a scalar inside an interpreted kernel
is a one-element numpy array, and ``tl.range(start, end)`` with tensor bounds turns it into a
Python int with ``int(array)``. NumPy 2.4 refuses that for an array that is not 0-dimensional
("only 0-dimensional arrays can be converted to Python scalars"), which breaks every kernel here
on the first key loop under triton 3.6 (whose interpreter does exactly that) with a current NumPy.
Later Triton releases squeeze the array first. The compiled kernels never run this code.

``patch_interpreter()`` makes the interpreter squeeze too, and only where it is needed: it asks the
interpreter itself whether its integer conversion fails on a one-element array, and otherwise
leaves Triton as it is.
"""

import numpy as np
import triton.language as tl

_PATCHED = False


def _index_of_one_element_array(interpreter):
    """The interpreter's own int(tensor) on a one-element array: the int, or the error it raises."""

    class Probe:  # stands in for tl.tensor: the interpreter only sets attributes on the class
        pass

    scope = interpreter._LangPatchScope()
    interpreter._patch_lang_tensor(Probe, scope)
    probe = Probe()
    probe.handle = interpreter.TensorHandle(np.array([7], dtype=np.int32), tl.int32)
    try:
        return Probe.__index__(probe)
    except TypeError as error:
        return error
    finally:
        scope.restore()


def interpreter_needs_patch():
    """True if this Triton's interpreter cannot turn a one-element array into an int."""
    from triton.runtime import interpreter

    if not all(hasattr(interpreter, name) for name in ("_LangPatchScope", "_patch_lang_tensor", "TensorHandle")):
        return False  # a layout we do not know: leave it alone
    return isinstance(_index_of_one_element_array(interpreter), TypeError)


def patch_interpreter():
    """Teach an older interpreter to squeeze one-element arrays in int(tensor); idempotent."""
    global _PATCHED
    if _PATCHED or not interpreter_needs_patch():
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patch_lang_tensor
    _PATCHED = True
