"""Summarizes an ncu per-SASS-line CSV (`ncu -i REPORT --page source --csv --print-source sass`, as written by
scripts/gpu_profile_fwd.sh): where the warp stall samples and the executed instructions fall.

Prints the totals, the code in blocks of --block lines that hold at least 0.5% of the samples (loops stand out
as dense blocks), the --top lines by samples with their main stall reasons, and, for --range A B (line indices
as printed), the opcodes executed there.

Usage: python scripts/sass_regions.py FILE.csv [--block 50] [--top 25] [--range A B]
"""
import argparse
import collections
import csv

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def load(path):
    rows = list(csv.reader(open(path)))
    header, data = rows[1], rows[2:]  # row 0 names the kernel
    col = {h: i for i, h in enumerate(header)}
    stalls = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    lines = []
    for r in data:
        lines.append({"sass": r[col["Source"]].strip(), "samples": int(r[col[SAMPLES]]),
                      "executed": int(r[col[EXECUTED]]),
                      "stalls": {h[len("stall_"):]: int(r[col[h]]) for h in stalls if r[col[h]] not in ("", "0")}})
    return rows[0][1] if len(rows[0]) > 1 else rows[0][0], lines


def opcode(sass):
    text = sass.split(None, 1)[1] if sass.startswith("@") else sass  # drop a predicate
    return text.split()[0] if text else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--range", type=int, nargs=2, metavar=("A", "B"))
    args = ap.parse_args()
    kernel, lines = load(args.csv)
    samples = sum(x["samples"] for x in lines) or 1
    executed = sum(x["executed"] for x in lines) or 1
    print(f"{kernel}\n{samples} stall samples, {executed / 1e6:.1f} M warp instructions executed")
    print(f"\nblocks of {args.block} lines (>= 0.5% of the samples):")
    for b in range(0, len(lines), args.block):
        part = lines[b:b + args.block]
        s, e = sum(x["samples"] for x in part), sum(x["executed"] for x in part)
        if s >= 0.005 * samples:
            print(f"  {b:5d}-{b + len(part) - 1:5d}  samples {100 * s / samples:5.1f}%  instructions "
                  f"{100 * e / executed:5.1f}%  starts: {part[0]['sass'][:50]}")
    print(f"\ntop {args.top} lines by samples:")
    for i in sorted(range(len(lines)), key=lambda i: -lines[i]["samples"])[:args.top]:
        x = lines[i]
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(x["stalls"].items(), key=lambda kv: -kv[1])[:3])
        print(f"  {i:5d}  {x['samples']:6d}  {x['sass'][:56]:56s}  {reasons}")
    if args.range:
        a, b = args.range
        by_op, by_op_samples = collections.Counter(), collections.Counter()
        for x in lines[a:b + 1]:
            by_op[opcode(x["sass"])] += x["executed"]
            by_op_samples[opcode(x["sass"])] += x["samples"]
        total = sum(by_op.values()) or 1
        print(f"\nopcodes executed in lines {a}-{b} ({total / 1e6:.1f} M):")
        for op, n in by_op.most_common(25):
            print(f"  {op:20s} {n / 1e6:7.2f} M  ({100 * n / total:4.1f}%)  samples {by_op_samples[op]}")


if __name__ == "__main__":
    main()
