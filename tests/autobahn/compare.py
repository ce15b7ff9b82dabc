"""Compares an Autobahn|Testsuite report with the committed results (expected.json).

Autobahn rates each case twice: `behavior` (did the echo do what RFC 6455 asks) and
`behaviorClose` (how the connection ended), and notes the close code the echo sent
(`remoteCloseCode`; none when it only dropped the connection, which Autobahn rates OK where
the case does not require a clean close). This exits 1 when any case FAILED on either rating,
when a case got worse than its committed rating, when its close code changed, or when the
report and the committed results do not list the same cases; it exits 0 otherwise and names
cases that got better, so the file can be updated (--update rewrites it from the report).

Orders, best first, from Autobahn's own report (autobahntestsuite/case/case.py and the
classes its HTML summary gives each rating):
  behavior:      OK > NON-STRICT > INFORMATIONAL > UNIMPLEMENTED > FAILED
  behaviorClose: OK > INFORMATIONAL > FAILED BY CLIENT > WRONG CODE > UNCLEAN > FAILED
"""

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

BEHAVIOR = ["FAILED", "UNIMPLEMENTED", "INFORMATIONAL", "NON-STRICT", "OK"]
BEHAVIOR_CLOSE = ["FAILED", "UNCLEAN", "WRONG CODE", "FAILED BY CLIENT", "INFORMATIONAL", "OK"]
FIELDS: list[tuple[str, list[str]]] = [("behavior", BEHAVIOR), ("behaviorClose", BEHAVIOR_CLOSE)]

# Per case: the two ratings, and the close code (an int, or None).
Results = dict[str, dict[str, object]]
CLOSE_CODE = "remoteCloseCode"


def case_key(case: str) -> list[int]:
    return [int(part) for part in case.split(".")]


def rank(order: list[str], rating: str) -> int:
    # A rating Autobahn has but this list does not (its "NO_CLOSE", marked "to remove")
    # counts as the worst.
    return order.index(rating) if rating in order else -1


def read_report(path: Path) -> Results:
    index = json.loads(path.read_text())
    if len(index) != 1:
        raise SystemExit(f"{path}: expected one agent, found {sorted(index)}")
    (cases,) = index.values()
    return {
        case: {**{field: result[field] for field, _ in FIELDS}, CLOSE_CODE: result[CLOSE_CODE]}
        for case, result in sorted(cases.items(), key=lambda kv: case_key(kv[0]))
    }


def summary(results: Results) -> str:
    lines = []
    for field, order in FIELDS:
        counts = Counter(str(result[field]) for result in results.values())
        shown = ", ".join(f"{counts[r]} {r}" for r in reversed(order) if counts[r])
        others = ", ".join(f"{n} {r}" for r, n in counts.items() if r not in order)
        lines.append(f"{field}: {shown}{', ' + others if others else ''}")
    return "\n".join(lines)


def compare(actual: Results, expected: Results) -> tuple[list[str], list[str]]:
    """The problems (each fails the run) and the improvements."""
    problems: list[str] = []
    better: list[str] = []
    for case in sorted(set(expected) - set(actual), key=case_key):
        problems.append(f"{case}: in expected.json but not in the report (not run?)")
    for case in sorted(set(actual) - set(expected), key=case_key):
        problems.append(f"{case}: not in expected.json (a new case? rerun with --update)")
    for case in sorted(set(actual) & set(expected), key=case_key):
        now_code, was_code = actual[case][CLOSE_CODE], expected[case][CLOSE_CODE]
        if now_code != was_code:
            problems.append(f"{case}: the close code changed: {was_code} -> {now_code}")
        for field, order in FIELDS:
            now, was = str(actual[case][field]), str(expected[case][field])
            if now == "FAILED":
                problems.append(f"{case}: {field} FAILED (committed: {was})")
            elif rank(order, now) < rank(order, was):
                problems.append(f"{case}: {field} got worse: {was} -> {now}")
            elif rank(order, now) > rank(order, was):
                better.append(f"{case}: {field} got better: {was} -> {now}")
    return problems, better


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path, help="the report's index.json")
    parser.add_argument("expected", type=Path, help="the committed expected.json")
    parser.add_argument("--update", action="store_true", help="rewrite expected from the report")
    args = parser.parse_args()

    actual = read_report(args.report)
    print(f"Autobahn: {len(actual)} cases")
    print(summary(actual))
    if args.update:
        lines = [f"  {json.dumps(case)}: {json.dumps(result)}" for case, result in actual.items()]
        args.expected.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        print(f"wrote {args.expected}")
        return 0

    expected: Results = json.loads(args.expected.read_text())
    problems, better = compare(actual, expected)
    for line in better:
        print(f"  {line}")
    if better:
        print(f"{len(better)} ratings got better: update {args.expected} (--update)")
    for line in problems:
        print(f"  {line}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problems (see {args.report.parent}/index.html)", file=sys.stderr)
        return 1
    print("no case failed or got worse than the committed results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
