"""Give every pin of a lock file the SHA-256 of each file its release has on the index, so
that install.sh can install it with pip's --require-hashes: a file that changes on the index
(or in transit) after the lock was written is refused, not installed.

Usage: python3 hash_lock.py LOCK...   (lock.sh runs it on what it writes; standard library
only). Each `name==version ; marker` line, with or without hashes already, is written again
with the hashes the index lists now for that release: its sdist and the wheels a CPython on
Linux or macOS (x86_64 or arm64) could take, of the version its marker names (any 3.x when it
names none); any other line but a comment or a blank one is refused (a pin with an inline
comment too: pip would drop the hashes after it). Windows', 32-bit and other
interpreters' wheels are left out to keep the lock readable; pip takes a listed file over an
unlisted one, and builds the sdist where no listed wheel fits.

The index is PIP_INDEX_URL's when set (it must answer PEP 691's JSON), else PyPI's.
"""

import base64
import http.client
import json
import os
import re
import sys
import urllib.parse
import urllib.request

INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^ ;]+)\s*(?P<marker>;.*)?$")
# Platforms no supported machine runs (see install.sh: CPython 3.10 to 3.13, Linux or macOS).
OTHER_PLATFORMS = re.compile(r"win|i686|ppc64|s390x|armv7|riscv|x86_64_v|cygwin|android|ios|emscripten|pyodide")
OTHER_INTERPRETERS = re.compile(r"^(pp|graalpy|ip|jy)")


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def fits_python(python, abi, minor):
    """Whether a wheel's python and abi tags suit CPython 3.`minor` (None: any)."""
    if minor is None:
        return True
    for tag in python.split("."):
        if tag in ("py3", f"cp3{minor}"):
            return True
        # A pure wheel of an earlier Python 3 (py38, say) installs on later ones.
        if tag.startswith("py3") and tag[3:].isdigit() and int(tag[3:]) <= minor:
            return True
        # A stable-ABI wheel of an earlier CPython 3 runs on later ones.
        if abi == "abi3" and tag.startswith("cp3") and tag[3:].isdigit() and int(tag[3:]) <= minor:
            return True
    return False


def takes(filename, version, minor):
    """Whether a file of the index is one of `version`'s that a supported machine, CPython
    3.`minor` when not None, could use."""
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)].rsplit("-", 1)[-1].lower() == version.lower()
    if not filename.endswith(".whl"):
        return False
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5 or parts[1].lower() != version.lower():
        return False
    python, abi, platform = parts[-3], parts[-2], parts[-1]
    return (
        not OTHER_PLATFORMS.search(platform)
        and not all(OTHER_INTERPRETERS.match(tag) for tag in python.split("."))
        and fits_python(python, abi, minor)
    )


def keeps_authorization(old, new):
    """Whether a redirect from `old` to `new` may carry the Authorization header, as pip's
    requests decides: the same host, scheme and port, or http upgraded to https on the
    default ports."""
    was, now = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    if was.hostname != now.hostname:
        return False
    if was.scheme == "http" and was.port in (80, None) and now.scheme == "https" and now.port in (443, None):
        return True
    default = {"http": 80, "https": 443}
    return was.scheme == now.scheme and (was.port or default.get(was.scheme)) == (now.port or default.get(now.scheme))


class SameHostAuthorization(urllib.request.HTTPRedirectHandler):
    """Follows a redirect without the Authorization header where pip would drop it
    ([keeps_authorization]; urllib's own handler sends every header on)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not keeps_authorization(req.full_url, newurl):
            new.remove_header("Authorization")
        return new


OPENER = urllib.request.build_opener(SameHostAuthorization)


def index_request(url):
    """A request for `url` asking for PEP 691's JSON; credentials in the URL (pip takes
    `https://user:token@host/simple`, which urllib cannot open) as Basic authorization."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": "application/vnd.pypi.simple.v1+json"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urllib.request.Request(urllib.parse.urlunsplit(parts), headers=headers)


def release_hashes(name, version, minor, cache):
    project = normalized(name)
    if project not in cache:
        request = index_request(f"{INDEX}/{project}/")
        try:
            with OPENER.open(request, timeout=60) as answer:
                cache[project] = json.load(answer)["files"]
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as e:
            # The URL without credentials; the error as urllib or json says it.
            sys.exit(f"hash_lock: could not read {request.full_url} for {name}=={version}: {e!r}")
    hashes = sorted(
        {f["hashes"]["sha256"] for f in cache[project] if "sha256" in f.get("hashes", {}) and takes(f.get("filename", ""), version, minor)}
    )
    if not hashes:
        sys.exit(f"hash_lock: the index lists no file of {name}=={version}")
    return hashes


def rewrite(path, cache):
    # A pin with hashes spans several lines joined by a trailing backslash; a comment is one
    # line whatever it ends with, as pip reads it (one inside a pin's continuation is refused
    # with the pin it interrupts).
    logical, current = [], ""
    with open(path) as lock:
        for line in lock:
            line = line.rstrip("\n")
            if not current and line.lstrip().startswith("#"):
                logical.append(line)
                continue
            current += line
            if current.endswith("\\"):
                current = current[:-1].rstrip() + " "
                continue
            logical.append(current)
            current = ""
    if current.strip():  # the last pin's line ended in a backslash
        logical.append(current.rstrip())
    out = []
    for line in logical:
        if not line.strip() or line.lstrip().startswith("#"):
            out.append(line)
            continue
        pin = PIN.match(line.split(" --hash=")[0].strip())
        # pip drops a line's comment and all after it (its hashes, once written after it).
        if not pin or re.search(r"\s#", line):
            # Written on unhashed, it would fail install.sh's --require-hashes later.
            sys.exit(f"hash_lock: {path}: not a name==version pin: {line.strip()}")
        marker = f" {pin['marker'].strip()}" if pin["marker"] else ""
        python = re.search(r'python_version == "3\.(\d+)"', marker)
        hashes = release_hashes(pin["name"], pin["version"], python and int(python[1]), cache)
        out.append(f"{pin['name']}=={pin['version']}{marker} \\")
        out.extend(f"    --hash=sha256:{h} \\" for h in hashes[:-1])
        out.append(f"    --hash=sha256:{hashes[-1]}")
    with open(path + ".hashing", "w") as hashed:
        hashed.write("\n".join(out) + "\n")
    os.replace(path + ".hashing", path)


if __name__ == "__main__":
    cache = {}
    for path in sys.argv[1:]:
        rewrite(path, cache)
        print(f"hashed {path}")
