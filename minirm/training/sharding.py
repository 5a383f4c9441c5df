"""Training a model larger than one GPU: FSDP2 (`torch.distributed.fsdp.fully_shard`).

Under DDP every process holds the whole model, its gradients and Adam's two moments: 16 bytes
per parameter in fp32 before activations, so an 8B reward model needs about 128 GB per GPU.
`--shard fsdp` splits all three across the processes instead. PyTorch does the work; this module
only decides where the cuts go and how a run's state is saved:

- **Where.** Each transformer layer is its own FSDP unit (its weights are gathered just before
  it runs and freed after), then the root (embeddings, final norm, head). With `--precision
  bf16` the gathered weights are bf16 and gradients are reduced in fp32 (`MixedPrecisionPolicy`);
  the sharded master weights and Adam's moments stay fp32.
- **Checkpoints.** A checkpoint's weights and optimizer state are written sharded by
  `torch.distributed.checkpoint` (each process writes its own part, in parallel), inside the same
  hidden temporary folder that is renamed into place whole, so a kill leaves the last whole
  checkpoint. DCP records what each tensor's full shape is, so a checkpoint saved by N processes
  loads into M processes, or into one process without sharding.
- **The final model** is gathered one tensor at a time to rank 0, which writes Hugging Face
  safetensors shards of at most 5 GB and `model.safetensors.index.json` as it goes: no process ever
  holds the whole model.

fp16 needs a GradScaler that knows the gradients are sharded; torch's own (`torch.amp.GradScaler`)
computes its inf check per process, so `--shard fsdp` refuses fp16 in one line: train in bf16.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import MinirmError

SHARDINGS = ("ddp", "fsdp")
SHARDED_DIR = "sharded"  # a checkpoint's DCP folder: OUTPUT/checkpoints/step-N/sharded/


def check_sharding(shard: str, precision: str) -> None:
    if shard not in SHARDINGS:
        raise MinirmError(f"unknown --shard {shard!r}; choose one of {', '.join(SHARDINGS)}")
    if shard == "fsdp" and precision == "fp16":
        raise MinirmError("--shard fsdp trains in fp32 or bf16: fp16's GradScaler would check each process's "
                          "gradient shard on its own; use --precision bf16")


def layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer layers: every model family keeps them in one `layers` ModuleList."""
    found = [m for name, m in model.named_modules() if name.endswith("layers") and isinstance(m, torch.nn.ModuleList)]
    if len(found) != 1:
        raise MinirmError(f"{type(model).__name__}: cannot find its layers to shard (expected one `layers` list)")
    return list(found[0])


def shard_model(model: torch.nn.Module, device: torch.device, world: int, precision: str) -> torch.nn.Module:
    """fully_shard each layer, then the root, over all processes; in place, returned for clarity."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if precision == "bf16" else MixedPrecisionPolicy()
    for layer in layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a collective: every process must call it), any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


# --- memory, on paper ------------------------------------------------------------------------

def bytes_per_process(parameters: int, world: int, shard: str, precision: str) -> dict[str, int]:
    """What training state costs each process, activations aside: fp32 master weights (4 bytes a
    parameter), fp32 gradients (4) and Adam's two fp32 moments (8), divided by the processes under
    FSDP; plus, under FSDP, the largest layer gathered whole for its forward and backward (not
    counted here: it is one layer's weights, in the compute dtype)."""
    parts = world if shard == "fsdp" else 1
    out = {"parameters": 4 * parameters // parts, "gradients": 4 * parameters // parts,
           "optimizer": 8 * parameters // parts}
    out["total"] = sum(out.values())
    return out


def memory_line(model: torch.nn.Module, world: int, shard: str, precision: str) -> str:
    parameters = sum(p.numel() for p in model.parameters())
    per = bytes_per_process(parameters, world, shard, precision)
    gib = {k: v / 2**30 for k, v in per.items()}
    return (f"{shard} over {world} process{'es' if world > 1 else ''}: {parameters / 1e6:.1f}M parameters; per "
            f"process {gib['parameters']:.2f} GiB weights + {gib['gradients']:.2f} GiB gradients + "
            f"{gib['optimizer']:.2f} GiB Adam = {gib['total']:.2f} GiB before activations")


# --- checkpoints ---------------------------------------------------------------------------

def save_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every process writes its shards of the weights and the optimizer state into folder/sharded/."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder / SHARDED_DIR))


def load_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load folder/sharded/ into this run's model and optimizer, however many processes saved it and
    however many (sharded or not) load it: DCP reshards by the tensors' full shapes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    try:
        with warnings.catch_warnings():  # one process: DCP warns that it assumes so, which is the point
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(folder / SHARDED_DIR))
    except Exception as e:  # noqa: BLE001 - a damaged or foreign checkpoint, whatever DCP raises
        raise MinirmError(f"{folder / SHARDED_DIR}: cannot be read ({str(e).splitlines()[0][:200]})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_whole_into_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                            optimizer_state: dict) -> None:
    """A whole checkpoint (one process or DDP) into a sharded run: every process holds it whole and
    keeps its shards. torch.optim numbers its state by parameter position; the sharded loader wants
    parameter names, which the optimizer's groups give in the same order (build_optimizer's)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {"state": {names[i]: v for i, v in optimizer_state["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in optimizer_state["param_groups"]]}
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=by_name,
                   options=StateDictOptions(full_state_dict=True))


def gathered(model: torch.nn.Module, main: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """(our name, whole tensor on the CPU) for each of the model's tensors, one at a time. Every
    process must run it to the end (each tensor is a collective); only `main` gets the tensors."""
    for name, tensor in model.state_dict().items():
        whole = full_value(tensor).detach()
        if main:
            yield name, whole.cpu()
        del whole


def finish_sync(world: int) -> None:
    if world > 1:
        dist.barrier()
