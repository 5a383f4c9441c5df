"""DeBERTa's relative positions, and the bias they give, in plain PyTorch: the maps the fused
kernel (deberta.py) reads and the reference it is checked and benchmarked against, built the way
transformers builds them.

Which row of the relative-position table R a query i and a key j read depends only on their
distance d = i - j: DeBERTa squashes far distances into log-sized buckets, then clamps to R's
ends. `relative_rows` gives those rows by distance, `by_pair` spreads them over (i, j), and
`relative_bias` is the c2p + p2c bias the padded path adds to the attention scores.
minirm.models.deberta builds its model on these; kernels/bench.py and the kernel's tests use them
without reaching up into the model. No Triton here: the model imports this on any machine.
"""

from __future__ import annotations

import torch

# --------------------------------------------------------------------


def log_bucket(distance: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """Squash relative distances into `buckets` slots, transformers' make_log_bucket_position.

    |d| <= buckets/2 is kept as it is. Farther distances map to
        sign(d) * (mid + ceil(log(|d| / mid) / log((max_distance - 1) / mid) * (mid - 1)))
    which reaches the last slot, +-(buckets - 1), at |d| = max_distance - 1. The float
    operations are the same float32 ones transformers runs, so bucket edges agree exactly.
    """
    mid = buckets // 2
    near = (distance < mid) & (distance > -mid)
    # near distances get a harmless placeholder so log() never sees 0; they are not used
    far = torch.where(near, torch.full_like(distance, mid - 1), distance.abs())
    log_ratio = torch.log(far / mid) / torch.log(torch.tensor((max_distance - 1) / mid))
    far_bucket = torch.ceil(log_ratio * (mid - 1)) + mid
    bucketed = torch.where(far <= mid, distance.to(far_bucket.dtype), far_bucket * torch.sign(distance))
    return bucketed.long()


def relative_distances(length: int, buckets: int, max_distance: int, device) -> torch.Tensor:
    """(2T - 1,) long tensor: bucket(d) for every distance d = i - j that occurs, at d + T - 1."""
    distances = torch.arange(-(length - 1), length, device=device)
    if buckets > 0 and max_distance > 0:
        distances = log_bucket(distances, buckets, max_distance)
    return distances


def by_pair(by_distance: torch.Tensor) -> torch.Tensor:
    """(2T - 1,) values by distance -> (T, T): out[i, j] = by_distance[i - j + T - 1]."""
    length = (by_distance.numel() + 1) // 2
    pos = torch.arange(length, device=by_distance.device)
    return by_distance[pos[:, None] - pos[None, :] + length - 1]


def relative_rows(length: int, buckets: int, max_distance: int, span: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of R (2 * span rows) that c2p and p2c read, by distance: (2T - 1,) each, at i - j + T - 1."""
    bucket = relative_distances(length, buckets, max_distance, device)  # bucket(d), d = i - j
    # distances beyond the table read its first / last row
    c2p_rows = torch.clamp(bucket + span, 0, 2 * span - 1)
    # p2c reads, for query i and key j, the row of minus the distance of key j from query i
    # (transformers' -relative_pos, taken at [j, i]): bucket(j - i), i.e. bucket reversed.
    # The buckets are symmetric, so this is the c2p row again, but it is built the way
    # transformers builds it
    p2c_rows = torch.clamp(span - bucket.flip(0), 0, 2 * span - 1)
    return c2p_rows, p2c_rows


def relative_positions(length: int, buckets: int, max_distance: int, device) -> torch.Tensor:
    """(T, T) long tensor: rel[i, j] = bucket(i - j), the distance of query i from key j."""
    return by_pair(relative_distances(length, buckets, max_distance, device))


def rows_read(c2p_rows: torch.Tensor, p2c_rows: torch.Tensor) -> slice:
    """The rows of R that two row maps reach, as one slice."""
    lo = int(torch.minimum(c2p_rows.min(), p2c_rows.min()))
    hi = int(torch.maximum(c2p_rows.max(), p2c_rows.max()))
    return slice(lo, hi + 1)


def relative_bias(q, k, pos_k, pos_q, c2p_index, p2c_index) -> torch.Tensor:
    """c2p + p2c, (B, nh, T, T), already scaled: q arrives scaled, and so does pos_q."""
    B, nh, T, _ = q.shape
    bias = None
    if pos_k is not None:
        # every query against every distance, then for key j pick the column of distance i - j
        by_distance = q @ pos_k.transpose(-1, -2)  # (B, nh, T, n)
        bias = torch.gather(by_distance, -1, c2p_index.expand(B, nh, T, T))
    if pos_q is not None:
        # every distance against every key, then for query i pick the row p2c_index[i, j]
        by_distance = pos_q @ k.transpose(-1, -2)  # (B, nh, n, T)
        p2c = torch.gather(by_distance, -2, p2c_index.expand(B, nh, T, T))
        bias = p2c if bias is None else bias.add_(p2c)
    return bias
