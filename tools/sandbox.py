"""Run a submission's functions in an isolated worker process; only tensors and plain data come back.

The trusted side (`Worker`, used by the hidden-check harness in --isolate mode) starts one worker per
(submission, chapter) and sends it calls; the worker (`serve`, this module run as a script) loads the
notebook's definitions and runs them. Pass/fail is decided by the caller, never in the worker.

Isolation (`isolation()` says which; MICOURSE_ISOLATION=auto|root|bwrap|none chooses, auto by default):
- "root" (the grader runs as root): unshare + setpriv. The worker runs with no capabilities as a uid of its
  own (UID_BASE + a slot held for the worker's life, so RLIMIT_NPROC, which counts per uid, is per worker),
  in its own network (no network), PID (it sees and can signal only its own processes; they all die with
  it), IPC and mount namespaces. In the mount namespace everything but the system folders, the Python
  environment and the repository's tools/ and utils/ is covered by empty read-only folders.
- "bwrap" (an unprivileged instructor; Debian's `bubblewrap`): the same namespaces, made by bubblewrap from
  an unprivileged user namespace of the worker's own (which also makes RLIMIT_NPROC per worker); only the
  system folders, the Python environment, tools/ and utils/ are mounted (read-only), nothing else exists.
- none: a plain subprocess as the grader's own user, with network; `make grade` refuses it unless asked.
In every mode: rlimits cap memory, CPU time, file size and processes; the trusted side polls the memory of
all the worker's processes together (MEMORY_MB) and times each call in CPU seconds of all of them
together (cgroups are not used: on this project's machines no cgroup v2 hierarchy with the cpu, memory
and pids controllers is delegated, so none could be tested); every call has a timeout, after which the
worker and every process below it are killed (and it is restarted for the next call). A worker can have a
wall-time budget for all its calls together (`Worker(budget=)`: the grader gives each learner's chapter
one, LEARNER_BUDGET); once it is spent every further call fails at once, saying so.
Requests go in as pickles (trusted -> worker); replies come back as `torch.save` bytes read
with `torch.load(weights_only=True)` and checked to hold only plain tensors, numbers, strings, lists,
tuples and dicts (a transformer_lens FactoredMatrix travels as its A and B), and bounded before any comparison
(MAX_REPLY_ELEMENTS in all, counted from shapes, so an `expand`ed view counts as its size; no view past its
storage).

Across the boundary: a model from `micourse.models.load_model` (it has `course_name`) is sent by name
plus its current weights (once, and again when they change); the worker loads the same model itself.
Gradients flow back through calls (a custom autograd Function asks the worker for the backward pass),
and torch's global RNG state is sent with each call (and advanced after it), so random draws inside the
function match the reference's under the same seed and differ from call to call. Nothing else comes back:
in-place changes the function makes to its arguments, and its RNG state, stay in the worker (they would be
a channel from untrusted code into the checks).
"""

from __future__ import annotations

import fcntl
import importlib.util
import io
import os
import pickle
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534  # the uid of a worker when no per-worker uid can be claimed
UID_BASE, UID_SLOTS = int(os.environ.get("MICOURSE_WORKER_UID_BASE", "200000")), 1024  # root mode: one uid per worker
CALL_TIMEOUT = float(os.environ.get("MICOURSE_CALL_TIMEOUT", "20"))  # CPU seconds per call of a learner function
LOAD_TIMEOUT = float(os.environ.get("MICOURSE_LOAD_TIMEOUT", "180"))  # start, imports, definitions, a model
MEMORY_MB = int(os.environ.get("MICOURSE_WORKER_MEMORY_MB", "4096"))  # address space of one worker
WALL_FACTOR = 5  # a call may take this many times its timeout in wall time when the machine is busy
# Cores one worker may use, all its processes together (a userspace limit: when a call's processes used more
# CPU time than this many cores over the last 0.25 s, they are all stopped for the excess). So a fork bomb
# gets one core, like an honest single-threaded function, and JOBS workers on JOBS cores do not slow each other.
WORKER_CORES = 1.0
MAX_REPLY = 256 << 20  # bytes of one reply
# Elements of all the tensors of one reply together (a FactoredMatrix counts as its product): checked before
# any comparison, so a tiny `expand`ed view of 10**15 elements is refused instead of making the judge spin.
MAX_REPLY_ELEMENTS = int(os.environ.get("MICOURSE_MAX_REPLY_ELEMENTS", str(1 << 26)))
# Wall seconds for all the checks of one learner's chapter together (tools/grade.py gives it to each worker).
LEARNER_BUDGET = float(os.environ.get("MICOURSE_GRADE_TIMEOUT", "600"))
# RLIMIT_NPROC counts processes and threads per uid (per user namespace): per worker in both isolated modes.
LIMITS = {"RLIMIT_AS": MEMORY_MB << 20, "RLIMIT_CPU": 600, "RLIMIT_FSIZE": 64 << 20,
          "RLIMIT_NPROC": int(os.environ.get("MICOURSE_WORKER_NPROC", "256")), "RLIMIT_CORE": 0}
SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc", "/sys"]
WORKSPACE = "/dev/shm"  # a fresh tmpfs inside the worker's mount namespace: its cwd and HOME


class WorkerError(Exception):
    """The worker could not answer: it timed out, crashed, was never able to start, or sent garbage."""


class BudgetSpent(WorkerError):
    """The worker's wall-time budget (all its calls together) is used up."""


class NotDefined(Exception):
    """The notebook does not define a function of this name."""


class RemoteError(Exception):
    """The learner's function raised an exception; `kind` is its class name (e.g. 'ValueError')."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind, self.message = kind, message


def isolation() -> str:
    """How workers are isolated here: "root", "bwrap" or "" (none), by MICOURSE_ISOLATION (auto|root|bwrap|none)
    and what this machine has (see the module's docstring)."""
    wanted = os.environ.get("MICOURSE_ISOLATION", "auto")
    root = os.geteuid() == 0 and all(shutil.which(t) for t in ("unshare", "setpriv", "mount"))
    bwrap = bool(shutil.which("bwrap"))
    if wanted not in ("auto", "root", "bwrap", "none"):
        raise ValueError(f"MICOURSE_ISOLATION={wanted!r}: expected auto, root, bwrap or none")
    if wanted == "auto":
        return "root" if root else "bwrap" if bwrap else ""
    return wanted if (wanted == "root" and root) or (wanted == "bwrap" and bwrap) else ""


def isolation_available() -> bool:
    return bool(isolation())


ISOLATION_NAMES = {"root": "root namespaces (unshare and setpriv, one uid per worker)",
                   "bwrap": "bubblewrap (unprivileged user namespaces)", "": "none"}


def isolation_problem() -> str:
    """Why isolated workers cannot start here ("" when they can). Run once before grading."""
    mode = isolation()
    if not mode:
        return ("no isolation available (not root, and bubblewrap's `bwrap` is not installed: apt install "
                "bubblewrap): learner code would run as you, with network")
    if os.geteuid() == 0 and not _world_readable(Path(sys.executable)):
        return (f"the grader's Python ({Path(sys.executable).resolve()}) is not readable by the unprivileged worker "
                f"user; create the environment from a system Python (make setup uses /usr/bin/python3)")
    with _claimed_uid() as uid:
        cmd, env = _isolated(mode, [sys.executable, "-I", "-c", ""], uid, [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return f"cannot start an isolated worker ({mode}): {proc.stderr.strip()[-300:]}" if proc.returncode else ""


class _claimed_uid:
    """As root: a uid no other worker on this machine holds (UID_BASE + a slot, locked for the worker's life)."""

    def __init__(self):
        self.fd, self.uid = None, NOBODY

    def claim(self) -> int:
        if self.fd is not None:
            return self.uid
        if os.geteuid() != 0 or not isolation():
            return self.uid
        folder = Path(tempfile.gettempdir()) / "micourse-worker-uids"
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.is_symlink() or folder.stat().st_uid != 0:
            raise WorkerError(f"{folder} is not a folder owned by root; remove it")
        for slot in range(UID_SLOTS):
            fd = os.open(folder / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.uid = fd, UID_BASE + slot
            return self.uid
        raise WorkerError(f"all {UID_SLOTS} worker uids are in use")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd, self.uid = None, NOBODY

    def __enter__(self) -> int:
        return self.claim()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------- framing (both sides)

def _send(fd: int, data: bytes, deadline: float | None = None) -> None:
    """Write one framed message; with a deadline, `fd` must be non-blocking (a worker may stop reading)."""
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        if deadline is not None and not select.select([], [fd], [], max(0.0, deadline - _now()))[1]:
            raise TimeoutError
        try:
            view = view[os.write(fd, view[: 1 << 20]):]
        except BlockingIOError:
            pass


def _recv_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None and not select.select([fd], [], [], max(0.0, deadline - _now()))[0]:
            raise TimeoutError
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv(fd: int, deadline: float | None = None, limit: int = 1 << 40) -> bytes | None:
    head = _recv_exact(fd, 8, deadline)
    if head is None:
        return None
    (n,) = struct.unpack("<Q", head)
    if n > limit:
        raise ValueError(f"a reply of {n} bytes (more than {limit})")
    return _recv_exact(fd, n, deadline)


def _now() -> float:
    return time.monotonic()


# ---------------------------------------------------------------- process trees (Linux /proc)

def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc (/proc/<pid>/task/*/children needs a kernel
    option that is not always there, so this reads each process's stat)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    found[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), parents first."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


def stop_tree(pid: int) -> list[int]:
    """SIGSTOP `pid` and every process below it (again, for any that forked between the walk and its SIGSTOP:
    a stopped process cannot fork); returns the processes stopped."""
    stopped: list[int] = []
    for _ in range(5):
        new = [p for p in [pid] + descendants(pid) if p not in stopped]
        if not new:
            break
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        stopped += new
    return stopped


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it, each stopped first (so none can fork away while the tree is
    walked). An isolated worker's `unshare` (--kill-child) takes its whole PID namespace with it, including
    processes that left their session; a worker's own process group is killed too."""
    for p in stop_tree(pid):
        for kill in (os.killpg, os.kill):
            try:
                if kill is os.kill or os.getpgid(p) == p:  # a group leader (a worker): its whole group
                    kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def tree_memory_mb(pid: int) -> float:
    """Memory used by `pid` and every process below it together (proportional set size, so pages shared
    between a process and its forks count once), in MB; 0 where it cannot be read."""
    total = 0
    for p in [pid] + descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup", "rb") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith(b"Pss:")), 0)
        except (OSError, ValueError, IndexError):
            pass
    return total / 1024


# ---------------------------------------------------------------- the trusted side

def _hide_commands(keep: list[Path], hide_extra: list[Path]) -> list[str]:
    """Shell commands (run as root in the worker's mount namespace) that cover everything not in `keep`."""
    keep = [p.resolve() for p in keep if p.exists()]
    cmds: list[str] = []
    covered: list[Path] = []

    def cover(p: Path) -> None:
        if any(c == p or c in p.parents for c in covered):
            return
        covered.append(p)
        q = shlex.quote(str(p))  # `if`: an entry of a shared folder (/tmp) may be gone by the time this runs
        if p.is_dir():
            cmds.append(f"if [ -d {q} ]; then mount -t tmpfs -o ro,size=4k,mode=000 hidden {q}; fi")
        elif p.is_file():
            cmds.append(f"if [ -f {q} ]; then mount --bind /dev/null {q}; fi")

    def visit(p: Path) -> None:
        if p in keep or p.is_symlink():
            return
        if not any(p in k.parents for k in keep):
            return cover(p)
        if p != Path("/"):  # a folder on the way to something kept: read-only, its other entries covered
            cmds.extend([f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(p))}",
                         f"mount -o remount,bind,ro {shlex.quote(str(p))}"])
        for child in sorted(p.iterdir()):
            visit(child)

    visit(Path("/"))
    for p in hide_extra:  # e.g. the submissions and the grades, wherever they are
        p = p.resolve()
        if p.exists() and not any(p == k or p in k.parents for k in keep):
            cover(p)
    cmds += [f"mkdir -p {WORKSPACE}", f"mount -t tmpfs -o size=256m,mode=1777 workspace {WORKSPACE}"]
    return cmds


def _world_readable(path: Path) -> bool:
    """Can any user run this file (every folder above it searchable, the file itself readable)?"""
    path = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o004)


ENV = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "MICOURSE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1", "MICOURSE_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8",
       "USER": "grader", "LOGNAME": "grader"}  # (a uid of its own has no passwd entry: getpass needs these)


def _kept() -> list[Path]:
    """What a worker may see besides the system folders: the Python environment, tools/ and micourse."""
    micourse = importlib.util.find_spec("micourse")
    keep = [ROOT / "tools", Path(sys.prefix), Path(sys.base_prefix)]
    return keep + ([Path(p) for p in (micourse.submodule_search_locations or [])] if micourse else [])


def _isolated(mode: str, python: list[str], uid: int, hide: list[Path]) -> tuple[list[str], dict]:
    """The command that runs `python` isolated in `mode` ("root" or "bwrap"), and its environment."""
    if mode == "bwrap":
        cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--as-pid-1", "--new-session", "--cap-drop", "ALL",
               "--size", str(256 << 20), "--tmpfs", "/tmp"]  # first: kept folders below may be under /tmp
        for folder in SYSTEM_DIRS:
            if folder in ("/dev", "/proc"):
                continue
            if os.path.islink(folder):  # /bin -> usr/bin on a merged /usr
                cmd += ["--symlink", os.readlink(folder), folder]
            elif os.path.isdir(folder):
                cmd += ["--ro-bind", folder, folder]
        for path in _kept():
            for p in dict.fromkeys([str(path.absolute()), str(path.resolve())]):
                if os.path.exists(p):
                    cmd += ["--ro-bind", str(path.resolve()), p]
        cmd += ["--dev", "/dev", "--proc", "/proc", "--size", str(256 << 20), "--tmpfs", WORKSPACE,
                "--chdir", WORKSPACE, "--", *python]
        if os.geteuid() == 0:  # root's user namespace would map the worker to root outside: drop to `uid` first
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *cmd]
        return cmd, {**ENV, "HOME": WORKSPACE}
    keep = [Path(p) for p in SYSTEM_DIRS] + _kept()
    script = "set -e\n" + "\n".join(_hide_commands(keep, hide)) + f"\ncd {WORKSPACE}\nexec " + shlex.join(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
         "--bounding-set=-all", "--no-new-privs", "--pdeathsig=KILL", "--", *python])
    wrapper = ["unshare", "--net", "--ipc", "--pid", "--fork", "--kill-child", "--mount-proc", "--", "/bin/sh", "-c", script]
    return wrapper, {**ENV, "HOME": WORKSPACE}


def _worker_command(uid: int) -> tuple[list[str], dict]:
    boot = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tools.sandbox import serve; serve()"
    python = [sys.executable, "-I", "-c", boot]
    mode = isolation()
    if not mode:
        return python, {**ENV, "HOME": tempfile.gettempdir()}
    if os.geteuid() == 0 and not _world_readable(Path(sys.executable)):
        raise WorkerError(isolation_problem())
    hide = [Path(p) for p in os.environ.get("MICOURSE_HIDE", "").split(os.pathsep) if p]
    return _isolated(mode, python, uid, hide)


_warned = False


class Worker:
    """One worker process serving the functions of one submission's notebooks."""

    def __init__(self, files: list[tuple[str, bytes]], budget: float | None = None):
        self.files = files
        self.budget, self.deadline = budget, None  # wall seconds for all calls together, counted from the first
        self._uid = _claimed_uid()
        self.proc: subprocess.Popen | None = None
        self.names: set[str] = set()
        self.problems: list[str] = []
        self.broken = ""  # why the notebook could not be loaded at all (then every call fails with this)
        self._models: dict[str, object] = {}  # course_name -> fingerprint of the weights the worker has
        self._calls = 0
        self.changed: list = []  # the caller's tensors that the last call changed in its own copies (see call)

    # -- process
    def start(self) -> None:
        global _warned
        if not isolation_available() and not _warned:
            warnings.warn("no isolation: learner code runs as you, with network (MICOURSE_ISOLATION, isolation())")
            _warned = True
        self._models = {}
        if self.budget is not None and self.deadline is None:
            self.deadline = _now() + self.budget
        try:
            cmd, env = _worker_command(self._uid.claim())
            self._stderr = tempfile.TemporaryFile()
            self._cwd = None if isolation_available() else tempfile.TemporaryDirectory()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         env=env, cwd=self._cwd.name if self._cwd else "/", start_new_session=True)
            os.set_blocking(self.proc.stdin.fileno(), False)
            reply = self._request({"op": "load", "files": self.files}, LOAD_TIMEOUT, "loading your notebook")
            if reply["status"] != "ok" or not isinstance(reply.get("names"), list):
                raise WorkerError(f"loading your notebook failed: {reply.get('type')}: {reply.get('message')}")
        except WorkerError as err:
            self.broken = str(err)
            self.stop()
            raise
        self.names, self.problems = {str(n) for n in reply["names"]}, [str(p) for p in reply.get("problems", [])]

    def stop(self) -> None:
        if self.proc is None:
            self._uid.release()
            return
        kill_tree(self.proc.pid)  # the worker's process group, and what left it (a setsid child)
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self._stderr):
            f.close()
        if self._cwd is not None:
            self._cwd.cleanup()
        self._uid.release()
        self.proc = None

    def ensure(self) -> None:
        if self.broken:
            raise WorkerError(self.broken)
        if self.deadline is not None and _now() >= self.deadline:
            self.stop()
            raise BudgetSpent(f"not run: the time budget of {self.budget:g} s for all of this chapter's checks "
                              f"together was used up by the earlier ones (look for a function that is very slow or "
                              f"never returns)")
        if self.proc is None:
            self.start()

    def _worker_said(self) -> str:
        self._stderr.seek(0)
        text = " ".join(self._stderr.read()[-2000:].decode(errors="replace").split())
        return f" (worker said: {text[-300:]})" if text else ""

    def _cpu_seconds(self) -> float:
        """CPU time used so far by all the worker's processes together (those still running, and the children
        they have waited for), in seconds."""
        total = 0
        for pid in [self.proc.pid] + descendants(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(f) for f in fields[11:15])
            except (OSError, IndexError, ValueError):
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def _wait(self, timeout: float) -> None:
        """Until the reply starts; TimeoutError after `timeout` s of CPU time of the worker's processes together,
        or WALL_FACTOR times as much wall time (so a busy machine does not fail slow learners, and a process
        that sleeps is stopped too); BudgetSpent at the worker's deadline; CPU use held to WORKER_CORES
        cores (by stopping all the worker's processes for the excess). MemoryError when the worker's
        processes together use more than MEMORY_MB (RLIMIT_AS bounds each process only; the sum is polled
        here, every 0.25 s)."""
        fd, start, cpu0 = self.proc.stdout.fileno(), _now(), self._cpu_seconds()
        since, cpu_since = start, cpu0
        while not select.select([fd], [], [], 0.25)[0]:
            now, cpu = _now(), self._cpu_seconds()
            if cpu - cpu0 > timeout or now - start > WALL_FACTOR * timeout:
                raise TimeoutError
            over = (cpu - cpu_since) - WORKER_CORES * (now - since)
            if over > 0.05:  # more than its share of the machine (many processes): all of them wait it out
                stopped = stop_tree(self.proc.pid)
                time.sleep(min(over, 1.0))
                for p in stopped:
                    try:
                        os.kill(p, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                since, cpu_since = _now(), self._cpu_seconds()
            if self.deadline is not None and _now() >= self.deadline:
                raise BudgetSpent
            if tree_memory_mb(self.proc.pid) > MEMORY_MB:
                raise MemoryError

    def _request(self, message: dict, timeout: float, what: str) -> dict:
        """Send one request and read its reply; after a timeout or a crash the worker is stopped."""
        detail = ""
        try:
            _send(self.proc.stdin.fileno(), pickle.dumps(message, protocol=5), _now() + WALL_FACTOR * timeout)
            self._wait(timeout)
            data = _recv(self.proc.stdout.fileno(), _now() + WALL_FACTOR * timeout, MAX_REPLY)
        except TimeoutError:
            self.stop()
            raise WorkerError(f"{what} did not finish within {timeout:g} s") from None
        except BudgetSpent:
            self.stop()
            raise BudgetSpent(f"{what} was still running when the time budget of {self.budget:g} s for all of this "
                              f"chapter's checks together ran out") from None
        except MemoryError:
            self.stop()
            raise WorkerError(f"{what} ended the grading worker: its processes together used more than "
                              f"{MEMORY_MB} MB of memory") from None
        except (OSError, ValueError) as err:  # a broken pipe, an oversized reply
            data, detail = None, f"; {err}"
        if data is None:
            try:
                code = self.proc.wait(timeout=5)
                code = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            except (subprocess.TimeoutExpired, ValueError):
                code = "no exit status"
            said = self._worker_said() if message["op"] == "load" else ""
            self.stop()
            raise WorkerError(f"{what} ended the grading worker ({code}){detail}{said}")
        try:
            return _check_reply(_load_plain(data))
        except Exception as err:
            self.stop()
            raise WorkerError(f"{what} sent back something the grader cannot read ({type(err).__name__}: {err})") from None

    # -- calls
    def call(self, name: str, args: tuple, kwargs: dict):
        """Run the submission's `name` on copies of the arguments and return its (plain) result. The caller's
        tensors never change; those the function changed in its copies are listed in `self.changed`."""
        import torch

        self.ensure()
        self.changed = []
        if name not in self.names:
            raise NotDefined(name)
        tensors, models = [], {}
        packed = _pack((args, kwargs), tensors, models)
        for model_name, model in models.items():
            self._send_model(model_name, model)
        grad = torch.is_grad_enabled()
        grad_pos = [i for i, t in enumerate(tensors) if grad and t.requires_grad]
        self._calls += 1
        call_id = self._calls
        reply = self._request({"op": "call", "id": call_id, "name": name, "args": packed, "grad": grad,
                               "tensors": [t.detach() for t in tensors], "grad_pos": grad_pos,
                               "rng": torch.get_rng_state()}, CALL_TIMEOUT, f"`{name}`")
        torch.randint(2**62, (1,))  # advance our RNG, so the next call draws fresh numbers (as it would in-process)
        if reply["status"] == "error":
            raise RemoteError(str(reply["type"]), str(reply["message"]))
        result, outs, changed = reply.get("result"), reply.get("grad_outputs"), reply.get("changed")
        flat = _tensors_in(result)
        if not (isinstance(outs, list) and all(type(i) is int and 0 <= i < len(flat) for i in outs)
                and isinstance(changed, list) and all(type(i) is int and 0 <= i < len(tensors) for i in changed)):
            self.stop()
            raise WorkerError(f"`{name}` sent back a malformed reply")
        self.changed = [tensors[i] for i in changed]
        if grad_pos and outs:
            linked = _Backward.apply(self, call_id, [flat[i] for i in outs], *[tensors[i] for i in grad_pos])
            linked = dict(zip(outs, linked if isinstance(linked, tuple) else (linked,)))
            result = _map_tensors(result, lambda i, t: linked.get(i, t))
        return _rebuild(result)

    def backward(self, call_id: int, grads: list):
        reply = self._request({"op": "backward", "id": call_id, "grads": grads}, CALL_TIMEOUT, "the backward pass")
        if reply["status"] == "error":
            raise RemoteError(str(reply["type"]), str(reply["message"]))
        return reply["grads"]

    def _send_model(self, name: str, model) -> None:
        import torch

        fingerprint = (id(model), tuple((p.data_ptr(), p._version) for p in model.parameters()))
        if self._models.get(name) == fingerprint:
            return
        state = {k: v.detach() for k, v in model.state_dict().items()}
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        compat = bool(getattr(model, "compatibility_mode", False))
        reply = self._request({"op": "model", "name": name, "state": state, "dtype": dtype, "compat": compat},
                              LOAD_TIMEOUT, f"loading the model {name!r}")
        if reply["status"] == "error":
            raise WorkerError(f"the worker could not load the model {name!r}: {reply['message']}")
        self._models[name] = fingerprint


def _autograd_function():
    import torch

    class Backward(torch.autograd.Function):
        """Links a remote call's outputs to its inputs; backward asks the worker for the input gradients."""

        @staticmethod
        def forward(ctx, worker, call_id, outputs, *inputs):
            ctx.worker, ctx.call_id, ctx.inputs = worker, call_id, inputs
            return tuple(outputs)

        @staticmethod
        def backward(ctx, *grad_outputs):
            grads = ctx.worker.backward(ctx.call_id, [g.detach() for g in grad_outputs])
            checked = [g if isinstance(g, torch.Tensor) and g.shape == x.shape else None for g, x in zip(grads, ctx.inputs)]
            return (None, None, None, *checked, *[None] * (len(ctx.inputs) - len(checked)))

    return Backward


class _LazyBackward:
    fn = None

    def apply(self, *args):
        if self.fn is None:
            self.fn = _autograd_function()
        return self.fn.apply(*args)


_Backward = _LazyBackward()


class _Pickler(pickle.Pickler):
    """Tensors go out-of-band (so the worker can track and return them); course models go by name."""

    def __init__(self, file, tensors: list, models: dict):
        super().__init__(file, protocol=5)
        self.tensors, self.models, self.index = tensors, models, {}

    def persistent_id(self, obj):
        import torch

        if isinstance(obj, torch.nn.Module) and isinstance(getattr(obj, "course_name", None), str):
            self.models[obj.course_name] = obj
            return ("model", obj.course_name)
        if isinstance(obj, torch.Tensor):
            if id(obj) not in self.index:
                self.index[id(obj)] = len(self.tensors)
                self.tensors.append(obj)
            return ("tensor", self.index[id(obj)])
        return None


def _pack(obj, tensors: list, models: dict) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, tensors, models).dump(obj)
    return buf.getvalue()


def _load_plain(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _check_reply(reply) -> dict:
    """A worker's reply holds only plain data; tensor subclasses become plain tensors. Tensors are bounded in
    what they can cost the judge: MAX_REPLY_ELEMENTS in all, dense CPU/CUDA tensors only, no view reaching
    past its storage (all checked from sizes and strides, before anything reads an element)."""
    if not isinstance(reply, dict) or "status" not in reply:
        raise TypeError("not a reply")
    budget = [MAX_REPLY_ELEMENTS]
    return {k: _plain_data(v, 0, budget) for k, v in reply.items()}


def _spend(budget: list, n: int, what: str) -> None:
    budget[0] -= n
    if budget[0] < 0:
        raise ValueError(f"{what} makes the result larger than the {MAX_REPLY_ELEMENTS} elements a result may have")


def _bounded_tensor(t, budget: list):
    import torch

    if t.layout is not torch.strided or t.device.type not in ("cpu", "cuda"):
        raise TypeError(f"a {t.layout} tensor on {t.device.type} (only dense tensors are accepted)")
    shape, strides = tuple(t.shape), t.stride()
    if len(shape) > 64:
        raise ValueError(f"a tensor of {len(shape)} dimensions")
    n = 1
    for size in shape:
        n *= size
    _spend(budget, n, f"a tensor of shape {shape} ({n} elements)")
    if n:
        if any(st < 0 for st in strides):
            raise ValueError("a tensor with negative strides")
        last = t.storage_offset() + sum((size - 1) * st for size, st in zip(shape, strides))
        if last >= t.untyped_storage().nbytes() // max(t.element_size(), 1):
            raise ValueError(f"a tensor view of shape {shape} that reaches past its storage")
    return t if type(t) is torch.Tensor else t.as_subclass(torch.Tensor)


def _plain_data(obj, depth: int = 0, budget: list | None = None):
    import torch

    budget = [MAX_REPLY_ELEMENTS] if budget is None else budget
    if depth > 64:
        raise TypeError("nested too deeply")
    if type(obj) in (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size):
        return obj
    if isinstance(obj, torch.Tensor):
        return _bounded_tensor(obj, budget)
    if type(obj) in (list, tuple):
        return type(obj)(_plain_data(x, depth + 1, budget) for x in obj)
    if type(obj) is dict:
        if set(obj) == {FACTORED}:  # its product is what the checks look at: count that
            a, b = obj[FACTORED] if type(obj[FACTORED]) in (list, tuple) and len(obj[FACTORED]) == 2 else (None, None)
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() >= 2 and b.dim() >= 2):
                raise TypeError("a malformed FactoredMatrix")
            n = 1
            for size in torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]):
                n *= size
            _spend(budget, n * a.shape[-2] * b.shape[-1], f"a FactoredMatrix of {a.shape[-2]} x {b.shape[-1]}")
        return {_plain_data(k, depth + 1, budget): _plain_data(v, depth + 1, budget) for k, v in obj.items()}
    raise TypeError(f"a {type(obj).__name__} in the reply")


def _map_tensors(obj, fn, counter=None):
    """Rebuild a nested structure with fn(i, tensor) applied to its tensors, in a fixed order."""
    import torch

    counter = [0] if counter is None else counter
    if isinstance(obj, torch.Tensor):
        counter[0] += 1
        return fn(counter[0] - 1, obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(x, fn, counter) for x in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn, counter) for k, v in obj.items()}
    return obj


def same_tensor(a, b) -> bool:
    """Same dtype, shape and values (NaN equal to NaN): was a tensor left as it was?"""
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if torch.equal(a, b):
        return True
    return bool(a.is_floating_point() or a.is_complex()) and torch.equal(a.isnan(), b.isnan()) and torch.equal(
        a.nan_to_num(0.0, 0.0, 0.0), b.nan_to_num(0.0, 0.0, 0.0))


def _tensors_in(obj) -> list:
    found = []
    _map_tensors(obj, lambda i, t: found.append(t))
    return found


FACTORED = "__FactoredMatrix__"


def _rebuild(obj):
    if isinstance(obj, dict) and set(obj) == {FACTORED}:
        from transformer_lens import FactoredMatrix

        a, b = obj[FACTORED]
        return FactoredMatrix(a, b)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _rebuild(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------- the worker

def _set_limits() -> None:
    import resource

    for name, value in LIMITS.items():
        soft, hard = resource.getrlimit(getattr(resource, name))
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(getattr(resource, name), (value, value))


def _to_plain(obj, depth: int = 0):
    """What a learner's function returned, as plain data for torch.save (run in the worker)."""
    import torch

    if depth > 64:
        raise TypeError("the result is nested too deeply")
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(torch.Tensor) if type(obj) is not torch.Tensor else obj
    if type(obj).__name__ == "FactoredMatrix" and hasattr(obj, "A") and hasattr(obj, "B"):
        return {FACTORED: [_to_plain(obj.A, depth + 1), _to_plain(obj.B, depth + 1)]}
    if type(obj).__module__ == "numpy":
        import numpy

        return torch.from_numpy(numpy.array(obj)) if isinstance(obj, numpy.ndarray) else obj.item()
    for base in (bool, int, float, complex, str, bytes):
        if isinstance(obj, base):
            return base(obj)
    if obj is None or type(obj) in (torch.dtype, torch.device, torch.Size):
        return obj
    if isinstance(obj, (list, tuple)):
        return (tuple if isinstance(obj, tuple) else list)(_to_plain(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return {_to_plain(k, depth + 1): _to_plain(v, depth + 1) for k, v in obj.items()}
    raise TypeError(f"returned a {type(obj).__module__}.{type(obj).__qualname__}, which the grader cannot carry "
                    f"back; return tensors, numbers, strings, or lists/tuples/dicts of them")


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, tensors: list, models: dict):
        super().__init__(file)
        self.tensors, self.models = tensors, models

    def persistent_load(self, pid):
        kind, key = pid
        return self.tensors[key] if kind == "tensor" else self.models[key]


def serve() -> None:
    """The worker's main loop: limits first, then the notebook's definitions, then one call after another."""
    _set_limits()
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    import torch

    from tools.notebooks import load_definitions

    torch.set_num_threads(1)
    save = torch.save
    models: dict = {}
    graphs: dict = {}
    module = None

    def answer(reply: dict) -> None:
        buf = io.BytesIO()
        save(reply, buf)
        _send(replies, buf.getvalue())

    def handle(msg: dict) -> dict:
        nonlocal module
        op = msg["op"]
        if op == "load":
            paths = []
            for i, (name, data) in enumerate(msg["files"]):
                folder = Path(f"nb{i}")
                folder.mkdir()
                (folder / Path(name).name).write_bytes(data)
                paths.append(folder / Path(name).name)
            defs = load_definitions(paths, name="submission")
            module = defs.module
            names = [k for k, v in vars(module).items() if callable(v) and not k.startswith("__")]
            return {"status": "ok", "names": names, "problems": defs.problems}
        if op == "model":
            if msg["name"] not in models:
                from micourse.models import load_model

                models[msg["name"]] = load_model(msg["name"], verbose=False)
            model = models[msg["name"]]
            if msg["compat"] and not getattr(model, "compatibility_mode", False):
                model.enable_compatibility_mode()
            model.to(msg["dtype"]).load_state_dict(msg["state"])
            return {"status": "ok"}
        if op == "call":
            tensors = list(msg["tensors"])
            for i in msg["grad_pos"]:
                tensors[i] = tensors[i].detach().requires_grad_(True)
            before = [t.detach().clone() for t in tensors]
            args, kwargs = _Unpickler(io.BytesIO(msg["args"]), tensors, models).load()
            torch.set_rng_state(msg["rng"])
            with torch.set_grad_enabled(msg["grad"]):
                out = _to_plain(getattr(module, msg["name"])(*args, **kwargs))
            changed = [i for i, (t, b) in enumerate(zip(tensors, before)) if not same_tensor(t.detach(), b)]
            flat = _tensors_in(out)
            grad_outputs = [i for i, t in enumerate(flat) if t.requires_grad]
            if grad_outputs and msg["grad_pos"]:
                graphs[msg["id"]] = ([tensors[i] for i in msg["grad_pos"]], [flat[i] for i in grad_outputs])
                for old in sorted(graphs)[:-16]:
                    del graphs[old]
            return {"status": "ok", "result": _map_tensors(out, lambda i, t: t.detach()), "grad_outputs": grad_outputs,
                    "changed": changed}
        if op == "backward":
            inputs, outputs = graphs[msg["id"]]
            pairs = [(o, g) for o, g in zip(outputs, msg["grads"]) if g is not None]
            grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True,
                                        retain_graph=True)
            return {"status": "ok", "grads": [None if g is None else g.detach() for g in grads]}
        raise ValueError(f"unknown request {op!r}")

    while True:
        data = _recv(requests)
        if data is None:
            return
        msg = pickle.loads(data)
        try:
            reply = handle(msg)
        except BaseException as err:  # the learner's code raised (or called sys.exit): report it, keep serving
            reply = {"status": "error", "type": type(err).__name__, "message": str(err)[:2000]}
        try:
            answer(reply)
        except BaseException as err:
            answer({"status": "error", "type": type(err).__name__, "message": f"could not send the result: {err}"[:2000]})
        if os.getpid() == 1:  # alone in a PID namespace: end whatever the call left running, reap it
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
