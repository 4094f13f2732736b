"""markers.py's own checks (run by `make checkov`, with a venv's Python, which has pip's
`packaging`): a package wanted on some machines only is named with them, through a chain of
requirements and the extras asked; one wanted everywhere, or nowhere, is not.

    python test_markers.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import markers  # noqa: E402


class Dist:
    def __init__(self, *requires):
        self.requires = list(requires)


X86 = {("linux", "x86_64"), ("darwin", "x86_64")}
INSTALLED = {
    "checkov": Dist(
        'pyston==2.3.5; platform_machine == "x86_64" and implementation_name == "cpython"',
        "boto3==1.35.49",
        'colorama; sys_platform == "win32"',
        'rich; extra == "fancy"',
        'moto[server]; extra == "mock"',
    ),
    "pyston": Dist("pyston-helper"),
    "pyston-helper": Dist(),
    "boto3": Dist('pyston-helper; sys_platform == "linux"'),
    "moto": Dist('flask; extra == "server"', 'werkzeug; extra == "proxy"'),
    # A requirement packaging cannot read is passed over.
    "flask": Dist("==1.0"),
    "werkzeug": Dist(),
    "rich": Dist(),
    "setuptools": Dist(),
}


def check(wanted, expected):
    on = markers.machines_wanting(INSTALLED, wanted)
    got = {name: machines for name, machines in on.items() if machines}
    assert got == expected, f"{wanted}: {got}"


def main():
    every = set(markers.MACHINES)
    linux = {m for m in markers.MACHINES if m[0] == "linux"}
    check(
        {"checkov": set()},
        # pyston-helper: by pyston (x86_64) or boto3 (Linux).
        {"checkov": every, "boto3": every, "pyston": X86, "pyston-helper": X86 | linux},
    )
    check(
        {"checkov": {"fancy", "mock"}},
        {
            "checkov": every,
            "boto3": every,
            "pyston": X86,
            "pyston-helper": X86 | linux,
            "rich": every,
            "moto": every,
            "flask": every,
        },
    )
    # What lock.sh reads: the machines of those wanted on some only, none for the others
    # (everywhere: checkov, boto3, rich; nowhere: colorama, setuptools).
    x86 = '(sys_platform == "linux" and platform_machine == "x86_64") or (sys_platform == "darwin" and platform_machine == "x86_64")'
    helper = (
        '(sys_platform == "linux" and platform_machine == "x86_64") or '
        '(sys_platform == "linux" and platform_machine == "aarch64") or '
        '(sys_platform == "darwin" and platform_machine == "x86_64")'
    )
    got = markers.lines(INSTALLED, {"checkov": {"fancy"}})
    assert got == [f"pyston\t{x86}", f"pyston-helper\t{helper}"], got
    print("markers: ok")


if __name__ == "__main__":
    main()
