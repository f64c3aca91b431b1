"""Our CRF against pytorch-crf (a benchmark/test-only dependency) on identical inputs and parameters.

    python benchmarks/crf_speed.py [--runs N] [--threads N] [--strict]

CPU, 2 threads. For each shape (variable lengths through a prefix mask): checks that both give
the same log-likelihoods (float64, to 1e-6) and the same Viterbi paths (float64 and float32),
then times Viterbi decoding and nll forward+backward (float32), best of ``--runs``, ours and
theirs interleaved (decode runs together, then nll runs together). Targets: decode >= 5x
faster, nll fwd+bwd no slower. A missed target is measured twice more. Exits 1 when a
correctness check fails (and, with ``--strict``, when a target is missed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagpipe.plugins.decoders.crf import CRF  # noqa: E402

SHAPES = [(64, 128, 9), (32, 40, 17)]
DECODE_TARGET, NLL_TARGET = 5.0, 1.0


def make_inputs(batch: int, seq: int, tags: int, seed: int = 0):
    """Emissions, gold tags, mask (lengths from seq/2 to seq, the first row full) and both CRFs."""
    import torchcrf

    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, seq, tags, generator=gen)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=gen)
    lengths[0] = seq
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    gold = torch.randint(0, tags, (batch, seq), generator=gen)
    theirs = torchcrf.CRF(tags, batch_first=True)
    ours = CRF(tags)
    ours.load_state_dict(theirs.state_dict())  # same names: transitions, start_/end_transitions
    return emissions, gold, mask, ours, theirs


def check(emissions, gold, mask, ours, theirs) -> list[str]:
    """Problems found (empty when both agree)."""
    problems = []
    em64 = emissions.double()
    ours64, theirs64 = CRF(ours.num_tags).double(), type(theirs)(theirs.num_tags, batch_first=True).double()
    ours64.load_state_dict(ours.state_dict())
    theirs64.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        ll_ours = -ours64.nll(em64, gold, mask)
        ll_theirs = theirs64(em64, gold, mask, reduction="none")
    err = float((ll_ours - ll_theirs).abs().max())
    if not err <= 1e-6:
        problems.append(f"log-likelihoods differ by {err:.3g} (float64)")
    for name, (o, t, em) in {"float64": (ours64, theirs64, em64), "float32": (ours, theirs, emissions)}.items():
        paths = [row[row >= 0].tolist() for row in o.decode(em, mask)]
        ref = t.decode(em, mask)
        bad = sum(p != r for p, r in zip(paths, ref, strict=True))
        if bad:
            problems.append(f"{bad} Viterbi paths differ ({name})")
    return problems


def best_times(fns: dict[str, callable], runs: int) -> dict[str, float]:
    """Best wall time of each function over ``runs`` rounds, the functions interleaved."""
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure(emissions, gold, mask, ours, theirs, runs: int) -> dict[str, float]:
    em = emissions.clone().requires_grad_(True)

    def nll_ours():
        ours.zero_grad(set_to_none=True)
        ours.nll(em, gold, mask).sum().backward()

    def nll_theirs():
        theirs.zero_grad(set_to_none=True)
        (-theirs(em, gold, mask, reduction="none")).sum().backward()

    def decode_ours():
        ours.decode(emissions, mask)

    def decode_theirs():
        theirs.decode(emissions, mask)

    times = best_times({"decode_ours": decode_ours, "decode_theirs": decode_theirs}, runs)
    times.update(best_times({"nll_ours": nll_ours, "nll_theirs": nll_theirs}, runs))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="timed rounds per shape (best is kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a speed target is missed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"uptime: {uptime}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.runs} interleaved runs\n")
    header = (
        f"{'shape B x T x C':<22}{'decode ours':>12}{'theirs':>10}{'ratio':>8}"
        f"{'nll f+b ours':>14}{'theirs':>10}{'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    failed, missed = [], []
    for shape in SHAPES:
        inputs = make_inputs(*shape)
        problems = check(*inputs)
        failed += [f"{shape}: {p}" for p in problems]
        for attempt in range(3):  # a surprising figure is measured again
            t = measure(*inputs, runs=args.runs)
            dec, nll = t["decode_theirs"] / t["decode_ours"], t["nll_theirs"] / t["nll_ours"]
            label = " x ".join(map(str, shape)) + (f" (again {attempt})" if attempt else "")
            print(
                f"{label:<22}{t['decode_ours'] * 1e3:>10.2f}ms{t['decode_theirs'] * 1e3:>8.2f}ms{dec:>7.1f}x"
                f"{t['nll_ours'] * 1e3:>12.2f}ms{t['nll_theirs'] * 1e3:>8.2f}ms{nll:>7.1f}x"
            )
            if dec >= DECODE_TARGET and nll >= NLL_TARGET:
                break
        else:
            missed.append(f"{shape}: decode {dec:.1f}x (target {DECODE_TARGET}x), nll {nll:.1f}x")
    print()
    ok = "OK (float64 log-likelihoods to 1e-6, identical Viterbi paths)"
    print(f"correctness: {ok if not failed else 'FAILED'}")
    for line in failed:
        print(f"  {line}")
    print("speed targets: " + ("met" if not missed else "MISSED"))
    for line in missed:
        print(f"  {line}")
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
