"""Check that requirements.txt resolves from the public index alone for each platform users have.

    python .ci/resolve.py [PLATFORM[:PIN] ...]     e.g. linux-x86_64:torch==2.11.0

Each platform is one `pip install --dry-run` with pip's configuration switched off (no local
wheels, no mirror), `--platform`/`--python-version`/`--only-binary=:all:` for the target, and
`--use-feature=fast-deps`, so pip reads each wheel's metadata and downloads none. pip evaluates
environment markers (`platform_system == "Linux"`) against the machine it runs on, not against
`--platform`, so each run patches the marker environment of pip's vendored `packaging` to the
target's before handing over to pip. With no arguments it checks every platform at the newest
releases, and Linux x86_64 with the oldest torch supported (2.11, which pins triton 3.6). Prints one line per platform with the torch (and triton)
it would install; exits 1 if any platform does not resolve.
"""
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "3.11"



def manylinux(arch):
    """pip matches --platform tags exactly: every glibc a current Linux has, newest first."""
    return [f"manylinux_2_{minor}_{arch}" for minor in range(39, 16, -1)] + [f"manylinux2014_{arch}"]


# platform -> (pip --platform tags, marker environment)
TARGETS = {
    "linux-x86_64": (manylinux("x86_64"),
                     {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                      "os_name": "posix"}),
    "linux-aarch64": (manylinux("aarch64"),
                      {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64",
                       "os_name": "posix"}),
    "macos-arm64": ([f"macosx_{v}_0_arm64" for v in range(15, 10, -1)],
                    {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
                     "os_name": "posix"}),
    "windows-amd64": (["win_amd64"],
                      {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64",
                       "os_name": "nt"}),
}

# Runs inside the child: patch the marker environment, then run pip's own main.
CHILD = """
import json, sys
from pip._vendor.packaging import markers
target = json.loads(sys.argv[1])
host = markers.default_environment
markers.default_environment = lambda: {**host(), **target}
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


DEFAULT = [*TARGETS, "linux-x86_64:torch==2.11.0"]


def resolve(job, out_dir):
    """Run the dry run for one platform ('NAME' or 'NAME:PIN'); returns (ok, one-line summary)."""
    name, _, pin = job.partition(":")
    tags, env_markers = TARGETS[name]
    report = os.path.join(out_dir, f"{job.replace(':', '-')}.json")
    args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--use-feature=fast-deps",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON,
            *[f"--platform={t}" for t in tags], "-r", os.path.join(ROOT, "requirements.txt"),
            "--report", report, *([pin] if pin else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(env_markers), *args], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        errors = [line for line in r.stderr.splitlines() if "ERROR" in line or "depends on" in line]
        return False, f"{job}: does not resolve: " + " | ".join(errors[-4:])
    with open(report) as f:
        found = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.load(f)["install"]}
    picked = ", ".join(f"{p} {found[p]}" for p in ("torch", "triton", "numpy") if p in found)
    return True, f"{job}: resolves ({len(found)} packages: {picked})"


def main(jobs):
    unknown = [j for j in jobs if j.partition(":")[0] not in TARGETS]
    if unknown:
        sys.exit(f"unknown platform {unknown[0]!r}: choose from {', '.join(TARGETS)}")
    with tempfile.TemporaryDirectory() as out_dir:
        jobs = jobs or DEFAULT
        with ThreadPoolExecutor(len(jobs)) as pool:  # the runs wait on the network: all at once
            results = list(pool.map(lambda job: resolve(job, out_dir), jobs))
    for _, line in results:
        print(line)
    sys.exit(0 if all(ok for ok, _ in results) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
