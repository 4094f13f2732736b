"""hash_lock.py's own checks (run by `make checkov`, with any venv's Python: standard library
only, and no network, a fake index answering): a pin is written again with the hashes of the
files of its release a supported machine could take, for its marker's Python; the index is
asked for pip's form of a name, once; a release with no such file is refused, the lock left
whole.

    python test_hash_lock.py
"""

import importlib.util
import io
import json
import os
import runpy
import sys
import tempfile
import unittest
import urllib.error
import urllib.request
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hash_lock  # noqa: E402

# The fake index: project -> (filename, sha256) of each file it lists. The hashes are words,
# so that an expected lock reads as which files were taken.
INDEX = {
    "foo-bar": [
        ("Foo_Bar-1.0.tar.gz", "sdist"),
        ("foo_bar-1.0-cp310-cp310-manylinux_2_17_x86_64.whl", "cp310"),
        ("foo_bar-1.0-cp311-cp311-macosx_11_0_arm64.whl", "cp311"),
        ("foo_bar-1.0-cp311-cp311-win_amd64.whl", "windows"),
        ("foo_bar-0.9.tar.gz", "older"),
    ],
    "six": [("six-1.16.0-py2.py3-none-any.whl", "six")],
    "windows-only": [("windows_only-1.0-cp310-cp310-win_amd64.whl", "windows")],
    "cp310-only": [("cp310_only-1.0-cp310-cp310-manylinux_2_17_x86_64.whl", "cp310")],
    "unhashed": [],
}
# A file the index gives no SHA-256 of cannot be checked: as if not listed.
UNHASHED = [
    {"filename": "unhashed-1.0.tar.gz", "hashes": {"md5": "md5"}},
    {"filename": "unhashed-1.0-py3-none-any.whl"},
]


class HashLock(unittest.TestCase):
    def setUp(self):
        self.asked = []
        # On the class: the command run by runpy below (its own opener) meets the fake too.
        patcher = mock.patch.object(urllib.request.OpenerDirector, "open", self.answer)
        patcher.start()
        self.addCleanup(patcher.stop)
        scratch = tempfile.TemporaryDirectory()
        self.addCleanup(scratch.cleanup)
        self.dir = Path(scratch.name)

    def answer(self, request, timeout):
        self.asked.append((request.full_url, request.get_header("Accept")))
        project = request.full_url.rstrip("/").rsplit("/", 1)[-1]
        if project not in INDEX:
            raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)
        files = [{"filename": f, "hashes": {"sha256": h}} for f, h in INDEX[project]]
        files += UNHASHED if project == "unhashed" else []
        return io.BytesIO(json.dumps({"meta": {"api-version": "1.0"}, "files": files}).encode())

    def assert_refused(self, text, named):
        """That a lock of `text` is refused with a message naming `named`, and left whole."""
        path = self.lock(text)
        with self.assertRaises(SystemExit) as refused:
            hash_lock.rewrite(path, {})
        self.assertIn(named, str(refused.exception.code))
        self.assertEqual(Path(path).read_text(), text)

    def lock(self, text, name="x.lock"):
        path = self.dir / name
        path.write_text(text)
        return str(path)

    def test_names_are_normalized_as_pip_compares_them(self):
        for name, project in [("Foo_Bar", "foo-bar"), ("zope..Interface", "zope-interface"), ("a-_.b", "a-b")]:
            self.assertEqual(hash_lock.normalized(name), project)

    def test_takes_the_sdist_and_the_wheels_a_supported_cpython_could_install(self):
        for filename in [
            "foo-1.0.tar.gz",
            "foo-1.0.zip",
            "foo-1.0-cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
            "foo-1.0-cp310-cp310-macosx_11_0_arm64.whl",
            # Earlier pure and stable-ABI wheels run on later Pythons.
            "foo-1.0-py2.py3-none-any.whl",
            "foo-1.0-py38-none-any.whl",
            "foo-1.0-cp38-abi3-manylinux_2_17_x86_64.whl",
            "foo-1.0-1-py3-none-any.whl",  # a build tag
        ]:
            self.assertTrue(hash_lock.takes(filename, "1.0", 10), filename)

    def test_leaves_out_other_releases_platforms_and_pythons(self):
        for filename in [
            "foo-1.0.1.tar.gz",
            "foo-1.0.1-py3-none-any.whl",
            "foo-1.0-cp310-cp310-win_amd64.whl",
            "foo-1.0-cp310-cp310-manylinux_2_17_i686.whl",
            "foo-1.0-cp310-cp310-manylinux_2_17_s390x.whl",
            "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
            "foo-1.0-cp39-cp39-manylinux_2_17_x86_64.whl",  # not abi3: 3.9's alone
            "foo-1.0-cp312-abi3-manylinux_2_17_x86_64.whl",
            "foo-1.0-py311-none-any.whl",
            "foo-1.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl",
            "foo-1.0.egg",
        ]:
            self.assertFalse(hash_lock.takes(filename, "1.0", 10), filename)

    def test_no_python_named_takes_any_cpython_but_not_other_platforms_or_interpreters(self):
        self.assertTrue(hash_lock.takes("foo-1.0-cp313-cp313-macosx_11_0_arm64.whl", "1.0", None))
        self.assertFalse(hash_lock.takes("foo-1.0-cp313-cp313-win_arm64.whl", "1.0", None))
        self.assertFalse(hash_lock.takes("foo-1.0-pp310-pypy310_pp73-macosx_11_0_arm64.whl", "1.0", None))

    def test_asks_the_index_json_for_each_project_once_by_its_normalized_name(self):
        cache = {}
        for name in ["Foo_Bar", "foo.bar", "FOO-BAR"]:
            self.assertEqual(hash_lock.release_hashes(name, "1.0", 10, cache), ["cp310", "sdist"])
        self.assertEqual(self.asked, [(f"{hash_lock.INDEX}/foo-bar/", "application/vnd.pypi.simple.v1+json")])

    def test_rewrites_each_pin_with_its_hashes_for_its_marker_python(self):
        path = self.lock(
            "# a comment, kept\n"
            'Foo_Bar==1.0 ; python_version == "3.10" \\\n'
            "    --hash=sha256:stale\n"
            'foo-bar==1.0 ; python_version == "3.11" and (sys_platform == "darwin")\n'
            "foo.bar==1.0\n"
            "six==1.16.0\n"
        )
        hash_lock.rewrite(path, {})
        # Names and markers as written; the stale hash gone; the last hash line ends the pin.
        self.assertEqual(
            Path(path).read_text(),
            "# a comment, kept\n"
            'Foo_Bar==1.0 ; python_version == "3.10" \\\n'
            "    --hash=sha256:cp310 \\\n"
            "    --hash=sha256:sdist\n"
            'foo-bar==1.0 ; python_version == "3.11" and (sys_platform == "darwin") \\\n'
            "    --hash=sha256:cp311 \\\n"
            "    --hash=sha256:sdist\n"
            "foo.bar==1.0 \\\n"
            "    --hash=sha256:cp310 \\\n"
            "    --hash=sha256:cp311 \\\n"
            "    --hash=sha256:sdist\n"
            "six==1.16.0 \\\n"
            "    --hash=sha256:six\n",
        )

    def test_refuses_a_release_the_index_lists_no_usable_file_of_and_leaves_the_lock_whole(self):
        for pin in [
            "foo-bar==2.0",  # not released, or not on this index
            "windows-only==1.0",
            'cp310-only==1.0 ; python_version == "3.12"',
            "unhashed==1.0",
        ]:
            with self.subTest(pin=pin):
                self.assert_refused(f"six==1.16.0 \\\n    --hash=sha256:old\n{pin}\n", pin.split(" ;")[0])
                self.assertEqual(sorted(os.listdir(self.dir)), ["x.lock"])
        # A project the index does not have (404) fails the run too, naming the pin and what
        # the index said, rather than leaving the pin unhashed.
        text = "six==1.16.0\nnowhere==1.0\n"
        path = self.lock(text)
        with self.assertRaises(SystemExit) as refused:
            hash_lock.rewrite(path, {})
        self.assertIn("nowhere==1.0", str(refused.exception.code))
        self.assertIn("404", str(refused.exception.code))
        self.assertEqual(Path(path).read_text(), text)

    def test_an_index_url_with_credentials_is_asked_with_basic_authorization(self):
        with mock.patch.object(hash_lock, "INDEX", "https://me:s%40cret@mirror.test/simple"):
            request = hash_lock.index_request(f"{hash_lock.INDEX}/six/")
        self.assertEqual(request.full_url, "https://mirror.test/simple/six/")
        self.assertEqual(request.get_header("Authorization"), "Basic bWU6c0BjcmV0")  # me:s@cret
        self.assertEqual(hash_lock.index_request("https://pypi.org/simple/six/").get_header("Authorization"), None)
        # Followed to the same host with the header, to another without it.
        redirect = hash_lock.SameHostAuthorization().redirect_request
        for to, kept in [
            ("https://mirror.test/files/six/", True),
            ("https://cdn.test/six/", False),
            ("http://mirror.test/six/", False),  # in clear text
            ("https://mirror.test:8443/six/", False),
        ]:
            followed = redirect(request, None, 302, "Found", {}, to)
            self.assertEqual(followed.get_header("Authorization") is not None, kept, to)

    def test_reads_a_comment_as_one_line_and_a_last_pin_ending_in_a_backslash_as_a_pin(self):
        path = self.lock("# ends in a backslash \\\nsix==1.16.0\nfoo-bar==1.0 \\\n")
        hash_lock.rewrite(path, {})
        self.assertEqual(
            Path(path).read_text(),
            "# ends in a backslash \\\n"
            "six==1.16.0 \\\n"
            "    --hash=sha256:six\n"
            "foo-bar==1.0 \\\n"
            "    --hash=sha256:cp310 \\\n"
            "    --hash=sha256:cp311 \\\n"
            "    --hash=sha256:sdist\n",
        )

    def test_refuses_a_line_that_is_no_pin_and_leaves_the_lock_whole(self):
        for line in [
            "foo @ file:///tmp/foo",
            "-e git+https://example.test/foo",
            "foo[extra]==1.0",
            "foo == 1.0",
            'foo==1.0 ; python_version == "3.10"  # an inline comment',
        ]:
            with self.subTest(line=line):
                self.assert_refused(f"six==1.16.0\n{line}\n", line)

    def test_the_index_is_pip_index_urls_else_pypis(self):
        def index(environ):
            spec = importlib.util.spec_from_file_location("hash_lock_fresh", HERE / "hash_lock.py")
            fresh = importlib.util.module_from_spec(spec)
            with mock.patch.dict(os.environ, environ, clear=True):
                spec.loader.exec_module(fresh)
            return fresh.INDEX

        self.assertEqual(index({}), "https://pypi.org/simple")
        self.assertEqual(index({"PIP_INDEX_URL": "https://mirror.test/simple/"}), "https://mirror.test/simple")

    def test_the_command_hashes_each_lock_given_with_one_fetch_per_project(self):
        paths = [self.lock("foo-bar==1.0\n", "a.lock"), self.lock("Foo.Bar==1.0\n", "b.lock")]
        with mock.patch.object(sys, "argv", ["hash_lock.py", *paths]), redirect_stdout(io.StringIO()) as out:
            runpy.run_path(str(HERE / "hash_lock.py"), run_name="__main__")
        self.assertEqual(out.getvalue(), "".join(f"hashed {path}\n" for path in paths))
        for path in paths:
            self.assertIn("    --hash=sha256:sdist\n", Path(path).read_text())
        self.assertEqual(len(self.asked), 1)


if __name__ == "__main__":
    unittest.main()
