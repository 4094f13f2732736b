"""Pass or fail `make checkov` from checkov's JSON report (`checkov --output json`).

Fails when a check failed, when the template did not parse or no CloudFormation check ran on
it (the secrets scan alone does not count), or when a
check is skipped without a reason: every skip in template.yaml is
`Metadata: checkov: skip: - id: CKV_... comment: <one-line reason>`.

    python checkov_gate.py report.json
"""

import json
import sys

NO_COMMENT = "No comment provided"  # what checkov records for a skip without `comment`


def problems(reports):
    found = []
    checked = 0
    for report in reports:
        kind = report.get("check_type", "?")
        summary = report.get("summary", {})
        if kind == "cloudformation":
            checked += summary.get("passed", 0) + summary.get("failed", 0) + summary.get("skipped", 0)
        if summary.get("parsing_errors", 0):
            found.append(f"{kind}: {summary['parsing_errors']} file(s) did not parse")
        results = report.get("results", {})
        # A count of failures without their list (a report shape checkov changed) still fails.
        if summary.get("failed", 0) and not results.get("failed_checks"):
            found.append(f"{kind}: {summary['failed']} check(s) failed, none listed in the report")
        for check in results.get("failed_checks", []):
            lines = "-".join(str(n) for n in check.get("file_line_range", []))
            found.append(
                f"FAILED {check['check_id']} {check['resource']} (template.yaml:{lines}): {check['check_name']}"
            )
        for check in results.get("skipped_checks", []):
            comment = (check.get("check_result", {}).get("suppress_comment") or "").strip()
            if not comment or comment == NO_COMMENT:
                found.append(f"SKIPPED WITHOUT A REASON {check['check_id']} {check['resource']}")
    if checked == 0:
        found.append("checkov ran no CloudFormation check: is template.yaml still a CloudFormation template?")
    return found


def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        report = json.loads(text)
    except json.JSONDecodeError:
        print(f"checkov wrote no JSON report to {path}:\n{text[:2000]}", file=sys.stderr)
        return 1
    reports = report if isinstance(report, list) else [report]
    found = problems(reports)
    for r in reports:
        s = r.get("summary", {})
        print(
            f"checkov {r.get('check_type', '?')}: {s.get('passed', 0)} passed, {s.get('failed', 0)} failed, "
            f"{s.get('skipped', 0)} skipped in template.yaml"
        )
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(
            "Fix each failed check, or skip it on its resource in template.yaml with "
            "`Metadata: checkov: skip: - id: ... comment: <why it does not apply>`.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
