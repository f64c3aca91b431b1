"""Chain scores and the plumbing that Viterbi and the forward algorithm share (parameter-free).

Every function scores tag sequences ``y_0 .. y_{n-1}`` (``n`` = a row's length) as::

    start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1} transitions[y_{t-1}, y_t] + end[y_{n-1}]

Shapes (``B`` batch, ``T`` longest sequence, ``C`` tags):

- ``emissions``: ``[B, T, C]`` (float32, float64 or bf16; computed in float32 at least);
- ``mask``: ``[B, T]`` bool whose ones are a prefix of each row; **every row must have length
  at least 1** (``mask[:, 0]`` all True), as in pytorch-crf;
- ``transitions``: ``[C, C]`` (``transitions[i, j]`` scores tag ``i`` followed by ``j``), or
  ``[B, T, C, C]`` for per-step scores (entry ``t`` scores ``y_{t-1} -> y_t``; entry 0 unused),
  which is what MEMMs need;
- ``start``, ``end``: ``[C]``.

The algorithms live beside this module: :mod:`~tagpipe.plugins.decoders.viterbi` (the best
path) and :mod:`~tagpipe.plugins.decoders.forward_backward` (``log Z`` and marginals). Both run
over time in one of the strategies :func:`choose_method` picks from: a loop (``T`` small steps,
time-major layout with the batch innermost), for Viterbi only the loop run from both ends of
each row at once (``"meet"``), and a parallel scan (a balanced tree of ``[C, C]`` semiring matrix
products, ``log2 T`` big steps, :func:`tree_reduce`). Padded steps become identity matrices, so
rows of different lengths share one scan. The helpers here are for those two modules; the
public API is :func:`sequence_score`, :func:`constraint_masks` and :func:`penalty`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tagpipe.corpora.schemes import Constraints

__all__ = ["constraint_masks", "penalty", "sequence_score"]

METHODS = ("auto", "loop", "meet", "scan")


def check_inputs(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> None:
    """Raise ValueError on shapes, dtypes or a mask the algorithms cannot take."""
    if emissions.dim() != 3:
        raise ValueError(f"emissions must have 3 dimensions [batch, seq, tags], got {emissions.dim()}")
    batch, seq, num_tags = emissions.shape
    if seq == 0:
        raise ValueError("emissions have sequence length 0; every sequence needs at least one token")
    if mask.shape != (batch, seq):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match emissions' [batch, seq] {(batch, seq)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    if transitions.shape not in ((num_tags, num_tags), (batch, seq, num_tags, num_tags)):
        raise ValueError(
            f"transitions must have shape {(num_tags, num_tags)} or {(batch, seq, num_tags, num_tags)}, "
            f"got {tuple(transitions.shape)}"
        )
    for name, vec in (("start", start), ("end", end)):
        if vec.shape != (num_tags,):
            raise ValueError(f"{name} must have shape {(num_tags,)}, got {tuple(vec.shape)}")
    if batch and not bool(mask[:, 0].all()):
        raise ValueError("mask[:, 0] must be all True: every sequence needs at least one token")


def working_dtype(emissions: Tensor) -> torch.dtype:
    """The dtype the algorithms compute in: float32 at least (long bf16 sums lose precision)."""
    return torch.promote_types(emissions.dtype, torch.float32)


def semiring_identity(c: int, like: Tensor) -> Tensor:
    """The semiring identity ``[C, C]``: 0 on the diagonal, -inf elsewhere (max-plus and log)."""
    eye = torch.eye(c, dtype=torch.bool, device=like.device)
    return torch.zeros(c, c, dtype=like.dtype, device=like.device).masked_fill(~eye, float("-inf"))


def pairwise_steps(emissions: Tensor, mask: Tensor, transitions: Tensor) -> Tensor:
    """Step matrices ``[B, T-1, C, C]``: entry ``q`` maps ``y_q -> y_{q+1}``; identity where padded."""
    trans = transitions if transitions.dim() == 2 else transitions[:, 1:]
    # shape: [batch, seq - 1, tags, tags]
    steps = trans + emissions[:, 1:, None, :]
    return torch.where(mask[:, 1:, None, None], steps, semiring_identity(emissions.shape[2], emissions))


def time_major_steps(emissions: Tensor, mask: Tensor, transitions: Tensor, identity: bool) -> Tensor:
    """Step matrices ``[T-1, C_from, C_to, B]``, batch innermost, contiguous.

    With the batch innermost, each step of a loop is one broadcast add and one reduction over
    the outermost dimension, both vectorised along ``C_to * B`` contiguous floats. Padded steps
    are identities when ``identity`` is set (else left as they come: the caller reads each row
    at its own length).
    """
    batch, seq, c = emissions.shape
    # shape: [seq, tags, batch]
    em = emissions.permute(1, 2, 0).contiguous()
    if transitions.dim() == 2:
        trans = transitions[None, :, :, None]
    else:
        trans = transitions[:, 1:].permute(1, 2, 3, 0).contiguous()
    steps = (trans + em[1:, None]).contiguous()
    if identity:
        eye = semiring_identity(c, emissions)[None, :, :, None]
        steps = torch.where(mask.T[1:, None, None, :], steps, eye)
    return steps


def pad_pow2(steps: Tensor, identity: Tensor) -> Tensor:
    """Pad ``[B, N, C, C]`` with identities to a power-of-two ``N``."""
    n = steps.shape[1]
    size = 1 << max(n - 1, 0).bit_length()
    if size == n:
        return steps
    pad = identity.expand(steps.shape[0], size - n, *identity.shape)
    return torch.cat([steps, pad], dim=1)


def choose_method(method: str, emissions: Tensor, decoding: bool, per_step: bool = False) -> str:
    """``method`` checked, or for ``"auto"`` the strategy expected to be fastest for the shapes."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method == "meet" and not decoding:
        raise ValueError("method 'meet' is for Viterbi decoding only; use 'loop' or 'scan'")
    if method != "auto":
        return method
    # The scan does C times the loop's arithmetic (B * T * C^3) in log2(T) big steps instead of
    # T small ones. Measured on a 2-core CPU it wins only where B * C^3 is tiny (a few long
    # sentences, few tags), more easily for log Z, whose loop steps cost more under autograd.
    batch, seq, c = emissions.shape
    if seq >= 16 and batch * c**3 <= (256 if decoding else 1024):
        return "scan"
    # Meeting in the middle saves T / 2 loop steps of fixed cost for ~25 more small ops; it loses
    # where a step of 2B rows outgrows the cache (B * C^2 over ~16k floats) or per-step
    # transitions must be gathered.
    if decoding and not per_step and seq >= 24 and batch * c * c <= 16384:
        return "meet"
    return "loop"


def tree_reduce(steps: Tensor, semiring: str) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Product of ``[B, N, C, C]`` step matrices (``N`` a power of two) as a balanced tree.

    ``"log"``: returns the log-semiring product ``[B, C, C]``. ``"max"``: returns the max-plus
    product and, per tree level (bottom first), the argmax of the shared middle tag
    ``[B, N / 2**level, C, C]``.
    """
    pointers: list[Tensor] = []
    while steps.shape[1] > 1:
        # shape: [batch, n / 2, tags_i, tags_k, tags_j]
        joint = steps[:, 0::2, :, :, None] + steps[:, 1::2, None, :, :]
        if semiring == "log":
            steps = torch.logsumexp(joint, dim=3)
        else:
            steps, middle = joint.max(dim=3)
            pointers.append(middle)
    product = steps[:, 0]
    return product if semiring == "log" else (product, pointers)


def sequence_score(
    emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """Score ``[B]`` of the given ``tags`` ``[B, T]`` (values at padding are ignored)."""
    check_inputs(emissions, mask, transitions, start, end)
    if tags.shape != mask.shape:
        raise ValueError(f"tags shape {tuple(tags.shape)} does not match mask shape {tuple(mask.shape)}")
    if tags.dtype != torch.long:
        raise ValueError(f"tags must be a long tensor, got {tags.dtype}")
    dtype = working_dtype(emissions)
    emissions, transitions = emissions.to(dtype), transitions.to(dtype)
    tags = tags.masked_fill(~mask, 0)
    num_tags = emissions.shape[2]
    if bool(((tags < 0) | (tags >= num_tags)).any()):
        raise ValueError(f"tags must lie in [0, {num_tags}) at unmasked positions")
    zero = emissions.new_zeros(())
    # shape: [batch, seq]
    unary = torch.where(mask, emissions.gather(2, tags[:, :, None]).squeeze(2), zero)
    prev, nxt = tags[:, :-1], tags[:, 1:]
    if transitions.dim() == 2:
        # shape: [batch, seq - 1]
        pair = transitions[prev, nxt]
    else:
        steps = transitions[:, 1:].flatten(2)
        pair = steps.gather(2, (prev * num_tags + nxt)[:, :, None]).squeeze(2)
    pair = torch.where(mask[:, 1:], pair, zero)
    last = tags.gather(1, (mask.sum(1) - 1)[:, None]).squeeze(1)
    return start.to(dtype)[tags[:, 0]] + unary.sum(1) + pair.sum(1) + end.to(dtype)[last]


def constraint_masks(constraints: Constraints | None, num_tags: int, *,
                     device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``Constraints`` as bool tensors ``(transitions [C, C], start [C], end [C])``, True where
    allowed (all True for ``None``). Raises ValueError on a size mismatch, or when no sequence at
    all would be allowed (no allowed start or no allowed end tag). The checks run on the CPU and the
    masks go to ``device`` (default: torch's default device), so a decoder also builds on the meta device
    (``Tagger.load`` sizes a model there before allocating it)."""
    device = torch.get_default_device() if device is None else torch.device(device)
    if constraints is None:
        ones = torch.ones(num_tags, dtype=torch.bool, device=device)
        return torch.ones(num_tags, num_tags, dtype=torch.bool, device=device), ones, ones.clone()
    trans, start, end = (torch.as_tensor(mask, dtype=torch.bool, device="cpu")
                         for mask in (constraints.transitions, constraints.start, constraints.end))
    if trans.shape != (num_tags, num_tags) or start.shape != (num_tags,) or end.shape != (num_tags,):
        raise ValueError(
            f"constraints are for {len(constraints.start)} tags (transitions {tuple(trans.shape)}), "
            f"expected {num_tags}"
        )
    if not bool(start.any()) or not bool(end.any()):
        raise ValueError("constraints allow no tag to start or no tag to end a sequence")
    return trans.to(device), start.to(device), end.to(device)


def penalty(allowed: Tensor, fill: float) -> Tensor:
    """0 where ``allowed`` (a CPU bool mask), ``fill`` elsewhere, on torch's default device. Computed on the
    CPU: on the meta device (``Tagger.load``'s sizes-only build) tensor maths runs through torch's Python
    references, whose first use imports torch._dynamo (~1.5 s of a process's start-up)."""
    return torch.zeros(allowed.shape, device="cpu").masked_fill(~allowed.cpu(), fill).to(torch.get_default_device())
