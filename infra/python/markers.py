"""Print, for each package of this venv that its requirements want on some of the machines
install.sh supports only, the marker naming those: `name<TAB>marker`, one a line. lock.sh adds
it to the pin's own (`python_version == "3.10" and (...)`), because install.sh installs a
lock's pins with --no-deps: a pin pip freeze listed bare would be installed everywhere
(checkov wants pyston under Python 3.10 on x86_64 only; it has no wheel for arm64).

Usage: VENV/bin/python markers.py REQUIREMENTS.txt   (run by lock.sh with the venv's Python;
the standard library and pip's own `packaging`).

Each requirement's marker is read, from the .txt's requirements down, on each supported
machine (Linux or macOS, x86_64 or arm64) with this venv's Python and the extras asked. A
package wanted on some machine that this one's venv lacks cannot be listed (pip freeze does
not know it): lock on x86_64 Linux, as the locks are.
"""

import importlib.metadata
import sys

from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import InvalidRequirement, Requirement

from hash_lock import normalized

# (sys_platform, platform_machine) of each machine install.sh supports.
MACHINES = (("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "x86_64"), ("darwin", "arm64"))
SYSTEMS = {"linux": "Linux", "darwin": "Darwin"}


def environment(machine, extra):
    platform, arch = machine
    env = default_environment()
    env.update(sys_platform=platform, platform_system=SYSTEMS[platform], platform_machine=arch, os_name="posix")
    env["extra"] = extra
    return env


def roots(path):
    """The .txt's requirements: name -> extras asked."""
    wanted = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                requirement = Requirement(line)
                wanted.setdefault(normalized(requirement.name), set()).update(requirement.extras)
    return wanted


def machines_wanting(installed, wanted):
    """Name -> the machines (of MACHINES) some chain of requirements from the .txt wants it on."""
    on = {name: set(MACHINES) for name in wanted}
    extras = {name: set(asked) for name, asked in wanted.items()}
    todo = list(wanted)
    while todo:
        name = todo.pop()
        dist = installed.get(name)
        for text in (dist.requires or []) if dist else []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            child = normalized(requirement.name)
            marker = requirement.marker
            asked = extras.get(name) or {""}
            reached = {
                machine
                for machine in on[name]
                if marker is None or any(marker.evaluate(environment(machine, extra)) for extra in asked)
            }
            known, asked_before = on.setdefault(child, set()), extras.setdefault(child, set())
            if not reached <= known or (reached and not set(requirement.extras) <= asked_before):
                known |= reached
                asked_before.update(requirement.extras)
                todo.append(child)
    return on


def lines(installed, wanted):
    """What lock.sh reads: `name<TAB>marker` for each installed package wanted on some
    machines only."""
    out = []
    for name, machines in sorted(machines_wanting(installed, wanted).items()):
        # Wanted nowhere (pip, setuptools: the venv's own) or everywhere: left as pip froze it.
        if name in installed and machines and machines != set(MACHINES):
            either = [f'sys_platform == "{p}" and platform_machine == "{m}"' for p, m in MACHINES if (p, m) in machines]
            out.append(f"{name}\t{' or '.join(f'({one})' for one in either)}")
    return out


def main(txt):
    installed = {normalized(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    for line in lines(installed, roots(txt)):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1])
