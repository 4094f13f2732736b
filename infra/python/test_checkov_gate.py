"""The gate's own checks (run by `make checkov` before the gate reads the real report): each
kind of report it must refuse is refused, and a clean one passes.

    python test_checkov_gate.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkov_gate  # noqa: E402

CLEAN = {"check_type": "cloudformation", "summary": {"passed": 3, "failed": 0, "skipped": 0}, "results": {}}
FAILED = {
    "check_type": "cloudformation",
    "summary": {"passed": 2, "failed": 1},
    "results": {
        "failed_checks": [
            {"check_id": "CKV_AWS_1", "resource": "Bucket", "file_line_range": [3, 9], "check_name": "a check"}
        ]
    },
}
SKIPPED_WITHOUT_REASON = {
    "check_type": "cloudformation",
    "summary": {"passed": 2, "skipped": 1},
    "results": {
        "skipped_checks": [
            {"check_id": "CKV_AWS_2", "resource": "Queue", "check_result": {"suppress_comment": checkov_gate.NO_COMMENT}}
        ]
    },
}
SECRETS_ONLY = {"check_type": "secrets", "summary": {"passed": 5}}
UNPARSED = {"check_type": "cloudformation", "summary": {"passed": 1, "parsing_errors": 1}}
FAILED_UNLISTED = {"check_type": "cloudformation", "summary": {"passed": 2, "failed": 1}, "results": {}}


def main():
    # Explicit exits rather than asserts: an inherited PYTHONOPTIMIZE would skip those.
    if checkov_gate.problems([CLEAN]) != []:
        sys.exit("the gate refused a clean report")
    for name, reports in [
        ("a failed check", [FAILED]),
        ("a skip without a reason", [SKIPPED_WITHOUT_REASON]),
        ("the secrets scan alone", [SECRETS_ONLY]),
        ("a template that did not parse", [UNPARSED]),
        ("failures counted but not listed", [FAILED_UNLISTED]),
        ("no report", []),
    ]:
        if not checkov_gate.problems(reports):
            sys.exit(f"the gate passed {name}")
    print("checkov gate: refuses what it must")


if __name__ == "__main__":
    main()
