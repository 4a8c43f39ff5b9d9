"""Where the time went: a py-spy profile in collapsed-stack ("raw") form, summed by function.

    python bench/profile_summary.py FILE [--top 25] [--thread MainThread]

Prints, for the busiest functions, the share of samples in which each was on the stack (inclusive) and
at its top (self), over every thread or the one named; and the share each thread had. py-spy writes a
line per distinct stack: "thread (id);frame;frame;... count", each frame "function (file:line)".
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def place(frame: str) -> str:
    """``function (short/path.py)``: the line number dropped, the path shortened to the package."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['function']} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="only stacks of threads whose name contains this")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in args.file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = re.sub(r" \(\d+\)$", "", frames[0]) if frames[0].startswith(("thread", "process")) else "?"
        if args.thread and args.thread not in thread:
            continue
        n = int(count)
        total += n
        threads[re.sub(r"\d+", "N", thread)] += n
        names = [place(f) for f in frames[1:] if f and not f.startswith(("process ", "thread "))]
        for name in set(names):
            inclusive[name] += n
        if names:
            own[names[-1]] += n
    if not total:
        raise SystemExit(f"{args.file}: no samples")
    print(f"{total} samples")
    print("threads: " + ", ".join(f"{t} {100 * n / total:.0f}%" for t, n in threads.most_common(6)))
    print(f"\n{'inclusive':>9} {'self':>6}  function")
    for name, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:8.1f}% {100 * own[name] / total:5.1f}%  {name}")
    print(f"\n{'self':>6}  function (most time at the top of the stack)")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
