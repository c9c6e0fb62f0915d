"""In-sandbox RPC agent: the only code that runs inside a sandbox.

Standard library only, Python >= 3.8 (checked by ``tests/test_agent_imports.py``). Nothing is
copied into the sandbox: at start the host runs ``python3 -I -S -c BOOTSTRAP`` as the
container's process (Docker, kodo) or over exec (Kubernetes, agent-sandbox), streams this file
(marshalled code for the sandbox's interpreter, else the source) on its stdin, and the bootstrap
runs it as one long-lived process attached to that byte stream (see ``agent_command`` in
``orchestrator/sandbox/base.py``)::

    python3 -I -S -c BOOTSTRAP TAG CODE_LEN SRC_LEN   # payload, then requests on stdin

Framing: one JSON object per line, UTF-8, both directions.

* request   ``{"id": "r1", "method": "session.run", "params": {...}}``
* reply     ``{"id": "r1", "result": {...}}`` or
            ``{"id": "r1", "error": {"code": -32602, "type": "InvalidParams", "message": "..."}}``
* stream    ``{"id": "r1", "chunk": "<base64>"}`` zero or more before the reply (``tar.get``),
            and host -> agent for an upload (``tar.put``), ended by ``{"id": "r1", "eof": true}``.

Requests run concurrently on worker threads (``session.run`` starts inline on the reader and
hands the reading to a worker if it runs longer than ``INLINE_WAIT``); replies may come out of
order. A request id is
executed at most once: a repeat of a finished id gets the cached reply, a repeat of a running
id is ignored (its one reply answers both), a repeat of an evicted id gets ``DuplicateRequest``.

This module must not import anything outside the standard library, and must not depend on the
host package (it is also imported by the host tests, so it has no import side effects).
"""

import collections
import errno
import os
import queue
import select
import stat as stat_mod
import sys
import threading
import time

try:  # the C module: same calls, without importing enum (~2 ms at start-up)
    import _signal as signal
except ImportError:  # pragma: no cover - non-CPython
    import signal

PROTOCOL_VERSION = 1
MAX_FRAME = 64 * 1024 * 1024
DEFAULT_MAX_OUTPUT = 1024 * 1024
DEFAULT_TIMEOUT = 120.0
MAX_READ = 16 * 1024 * 1024
CHUNK = 256 * 1024
REPLY_CACHE = 256
REPLY_CACHE_MAX_BYTES = 1024 * 1024
SEEN_IDS = 65536
MIN_WORKERS = 4
#: how long a session.run read inline by the request reader may wait before the reading of
#: requests moves to a worker (a cancel or another request then waits at most this long)
INLINE_WAIT = 0.005
MAX_WORKERS = 256
#: methods whose request is followed by a stream of data chunks from the host
UPLOAD_METHODS = ("tar.put", "fs.apply")


class RpcError(Exception):
    """An error that travels to the host as a structured reply."""

    def __init__(self, code, type_, message, data=None):
        Exception.__init__(self, message)
        self.code = code
        self.type = type_
        self.message = message
        self.data = data

    def to_wire(self):
        err = {"code": self.code, "type": self.type, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def _fast_json():
    """loads/dumps on CPython's _json C module directly.

    ``import json`` pulls in re, enum and functools: ~8 ms of every sandbox's start-up. The C
    scanner and encoder are what json itself uses; a self-test guards against interpreters whose
    internals differ, which fall back to the json module.
    """
    import _json

    class _Ctx(object):
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = None
        memo = {}

    def _bad_constant(name):
        raise ValueError("invalid constant %r" % name)

    _Ctx.parse_constant = staticmethod(_bad_constant)
    scanner = _json.make_scanner(_Ctx())
    encoder = _json.make_encoder(
        None, _no_default, _json.encode_basestring, None, ":", ",", False, False, True
    )
    ws = " \t\n\r"

    def loads(text):
        i = 0
        n = len(text)
        while i < n and text[i] in ws:
            i += 1
        try:
            obj, end = scanner(text, i)
        except StopIteration as exc:
            raise ValueError("Expecting value: char %s" % exc.value)
        while end < n and text[end] in ws:
            end += 1
        if end != n:
            raise ValueError("Extra data: char %d" % end)
        return obj

    def dumps(obj):
        return "".join(encoder(obj, 0))

    probe = {"a": [1, 2.5, None, True, '\u00e9\n"x'], "b": {"c": -3}}
    if loads(dumps(probe)) != probe or loads(' {"k": [1]} ') != {"k": [1]}:
        raise ImportError("_json self-test failed")
    return loads, dumps


def _no_default(obj):
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


try:
    json_loads, json_dumps = _fast_json()
except Exception:  # pragma: no cover - non-CPython or changed internals
    import json as _json_mod

    json_loads = _json_mod.loads

    def json_dumps(obj):
        return _json_mod.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class _Lazy(object):
    """Imports a module on first attribute access (keeps the agent's start-up fast)."""

    def __init__(self, name):
        self._name = name
        self._mod = None

    def __getattr__(self, attr):
        if self._mod is None:
            self._mod = __import__(self._name)
        return getattr(self._mod, attr)


subprocess = _Lazy("subprocess")
re = _Lazy("re")
base64 = _Lazy("base64")


def invalid_params(message):
    return RpcError(-32602, "InvalidParams", message)


_ERRNO_TYPES = {
    errno.ENOENT: "FileNotFound",
    errno.EACCES: "PermissionDenied",
    errno.EPERM: "PermissionDenied",
    errno.EISDIR: "IsADirectory",
    errno.ENOTDIR: "NotADirectory",
    errno.EEXIST: "FileExists",
    errno.ENOSPC: "NoSpace",
    errno.EDQUOT: "NoSpace",
    errno.EROFS: "PermissionDenied",
    errno.ENOTEMPTY: "DirectoryNotEmpty",
    errno.EAGAIN: "ResourceExhausted",
    errno.ENOMEM: "ResourceExhausted",
}


def os_error(exc, path=None):
    type_ = _ERRNO_TYPES.get(exc.errno or 0, "OSError")
    where = path if path is not None else exc.filename
    text = exc.strerror or str(exc)
    message = "%s: %s" % (text, where) if where else text
    return RpcError(-32001, type_, message, {"errno": exc.errno, "path": where})


# --------------------------------------------------------------------------------------------
# parameters


def _param(params, name, kind, default=None, required=False):
    if name not in params or params[name] is None:
        if required:
            raise invalid_params("missing required parameter %r" % name)
        return default
    value = params[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise invalid_params(
            "parameter %r must be %s, got %s" % (name, names, type(value).__name__)
        )
    return value


def _env_param(params):
    env = _param(params, "env", dict, {})
    for k, v in env.items():
        if not isinstance(v, str) or "=" in k or "\0" in k or "\0" in v:
            raise invalid_params("parameter 'env' must map names to strings")
    return env


def _timeout_param(params):
    timeout = _param(params, "timeout", float, DEFAULT_TIMEOUT)
    if timeout <= 0:
        raise invalid_params("parameter 'timeout' must be > 0")
    return timeout


def _max_output_param(params):
    cap = _param(params, "max_output", int, DEFAULT_MAX_OUTPUT)
    if cap < 0:
        raise invalid_params("parameter 'max_output' must be >= 0")
    return cap


def _path_param(params, name="path"):
    path = _param(params, name, str, required=True)
    if not path or "\0" in path:
        raise invalid_params("parameter %r must be a non-empty path" % name)
    return path


# --------------------------------------------------------------------------------------------
# output capture


class Capture(object):
    """Keeps the first and last ``cap // 2`` bytes of a stream and counts the rest."""

    def __init__(self, cap):
        self.head_cap = cap - cap // 2
        self.tail_cap = cap // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data):
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self.tail_cap:
            self.tail += data
            if len(self.tail) > 2 * self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def elided(self):
        return max(0, self.total - len(self.head) - min(len(self.tail), self.tail_cap))

    def text(self):
        # decoded straight from the bytearrays: a megabyte of output was copied four times
        tail = self.tail[-self.tail_cap :] if self.tail_cap else b""
        if self.elided:
            note = "\n[... %d bytes elided ...]\n" % self.elided
            return self.head.decode("utf-8", "replace") + note + tail.decode("utf-8", "replace")
        return (self.head + tail).decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# process helpers


# Children started by the agent (bash sessions, exec processes). As PID 1 the agent also
# inherits every orphan in the sandbox; the reaper collects those zombies but never one of these,
# whose exit status belongs to its Popen. Spawning and registering happen under the same lock the
# reaper holds, so a child that exits at once cannot be taken for an orphan.
_CHILDREN_LOCK = threading.Lock()
_CHILDREN = set()
#: set by kill_tree: killed processes are zombies that still count against the pids limit
_REAP_NOW = threading.Event()


#: per thread: what to call before this thread may block for long (an inline call that is
#: still holding the request reader hands it to a worker first; see Agent._dispatch)
_TL = threading.local()


def may_block():
    """About to wait for long (a command that is still running, a busy session, a fork bomb
    being killed): if this thread is also the request reader, hand reading over first."""
    release = getattr(_TL, "release", None)
    if release is not None:
        _TL.release = None
        release()


def spawn(argv, **kwargs):
    with _CHILDREN_LOCK:
        harden()  # before the first command exists: none may ever see us dumpable
        proc = subprocess.Popen(argv, **kwargs)
        _CHILDREN.add(proc.pid)
    return proc


#: what harden() achieved, reported by ``info`` (None until the first command is spawned)
HARDENING = {}


def harden():
    """Make the agent unreachable from the commands it runs: non-dumpable.

    Commands run as the agent's uid (or as root without capabilities). A dumpable process of
    the same uid can be opened through ``/proc/<pid>/fd`` (read a request, write a forged reply,
    steal one), read and written through ``/proc/<pid>/mem`` and ptraced. ``PR_SET_DUMPABLE 0``
    makes every one of those need ``CAP_SYS_PTRACE``, which ``cap_drop=ALL`` takes away. It
    lasts until we exec (never) and is not inherited across a child's exec, so commands behave
    as usual. Done lazily, before the first command starts (``ctypes`` costs ~3 ms of start-up);
    without ctypes or a libc the agent still works and ``info`` says it is not hardened.
    """
    if HARDENING:
        return HARDENING
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE, SUID_DUMP_DISABLE
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
        dumpable = libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        HARDENING.update(dumpable=bool(dumpable), note=None)
    except Exception as exc:  # no _ctypes module, no libc symbol, a seccomp filter...
        HARDENING.update(
            dumpable=True,
            note="the agent stays dumpable (%s: %s): commands of the same uid can read its "
            "file descriptors and memory" % (type(exc).__name__, exc),
        )
    return HARDENING


def forget(proc):
    with _CHILDREN_LOCK:
        _CHILDREN.discard(proc.pid)


def watchdog_forever(guard, reap, interval=1.0):
    """Once a second (sooner after a kill): end a fork bomb at the pids limit, and as PID 1
    reap the zombies re-parented to us."""
    while True:
        _REAP_NOW.wait(interval)
        _REAP_NOW.clear()
        if reap:
            reap_orphans()
        guard.check()
        if _OOM_SEEN[0] is not None:
            _OOM_SEEN[0] = _oom_kills()


def reap_orphans():
    """Reap zombies re-parented to us (we are PID 1: the container's init)."""
    me = str(os.getpid()).encode()
    reaped = 0
    with _CHILDREN_LOCK:
        for pid, fields in _proc_stats():
            if pid not in _CHILDREN and fields[0] == b"Z" and fields[1] == me:
                try:
                    os.waitpid(pid, os.WNOHANG)
                    reaped += 1
                except OSError:
                    pass
    return reaped


def _proc_stats():
    """(pid, fields of /proc/<pid>/stat after the command name) for every visible process."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 3:
            yield int(name), fields


def _proc_table():
    """pid -> (ppid, pgid, sid) for every visible process."""
    table = {}
    for pid, fields in _proc_stats():
        try:
            table[pid] = (int(fields[1]), int(fields[2]), int(fields[3]))
        except ValueError:
            continue
    return table


def direct_children(pid):
    """The pids whose parent is ``pid`` (one small read where the kernel offers it)."""
    try:
        # os.open: open() adds fstat, ioctl and lseek (the fallback when a session keeps no fd)
        fd = os.open("/proc/%d/task/%d/children" % (pid, pid), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return read_children(fd)
        finally:
            os.close(fd)
    except OSError:
        return frozenset(p for p, row in _proc_table().items() if row[0] == pid)


def read_children(fd):
    """The pids in an open ``/proc/<pid>/task/<pid>/children``: one pread at offset 0 (the
    kernel regenerates the list for each read there) instead of open + read + close."""
    raw = os.pread(fd, 65536, 0)
    if len(raw) == 65536:  # a long list: read on, the kernel keeps the offsets consistent
        while True:
            more = os.pread(fd, 65536, len(raw))
            if not more:
                break
            raw += more
    return frozenset(int(p) for p in raw.split())


def command_processes(root, old_children=frozenset(), sid=None):
    """(pid, pgid) of the processes a command under ``root`` created.

    That is the descendants of ``root`` outside the subtrees of ``old_children`` (the root's
    children before the command started: earlier background jobs), plus, when ``sid`` is given,
    every process of that session outside the old jobs' process groups: a process whose parent
    died is re-parented to PID 1 and leaves the tree, but keeps its session and group.
    """
    table = _proc_table()
    children = collections.defaultdict(list)
    for pid, row in table.items():
        children[row[0]].append(pid)
    old_groups = set(table[c][1] for c in old_children if c in table)
    found = {}
    stack = [c for c in children[root] if c not in old_children]
    while stack:
        pid = stack.pop()
        found[pid] = table[pid][1]
        stack.extend(children[pid])
    if sid is not None:
        me = os.getpid()
        for pid, (_ppid, pgid, psid) in table.items():
            if psid == sid and pid not in (root, me) and pgid not in old_groups:
                found[pid] = pgid
    return list(found.items())


def kill_tree(root, old_children, keep_pgids, sid=None):
    """SIGKILL the processes a command created, by process group and by pid, until none is left.

    Groups seen in any pass are killed again in every later pass, so children forked while
    their parent was being killed (a fork bomb) do not survive.
    """
    groups = set()
    for _ in range(50):
        procs = command_processes(root, old_children, sid)
        groups.update(g for _p, g in procs)
        groups -= keep_pgids
        alive = False
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
                alive = True
            except OSError:
                pass
        for pid, _g in procs:
            try:
                os.kill(pid, signal.SIGKILL)
                alive = True
            except OSError:
                pass
        _REAP_NOW.set()
        if not alive:
            return
        time.sleep(0.005)


class PidsGuard(object):
    """Ends what saturates the sandbox's pids limit, so the next command is not flooded.

    A fork bomb started in the background returns at once and then fills the pids limit; its
    processes keep failing to fork and print about it into the session's output for ever. The
    cgroup counts the forks refused at the limit (``pids.events``: ``max N``); when that count
    moves, the process session (setsid) holding the most processes is killed, all but its bash,
    and its session is told so: the next command there drops their output and says why. One
    small file read per check; the process table is scanned only when the count moved.
    """

    def __init__(self, sessions, reap=False):
        self.sessions = sessions  # () -> the live Session objects
        self.reap = reap  # we are PID 1: the killed processes' zombies are ours to reap
        self.events, self.limit = _pids_files()
        self.events_fd = None  # opened on first use
        self.seen = self.refused()
        self.kills = 0
        self.log = collections.deque(maxlen=32)  # (kill number, sid, note)
        self.lock = threading.Lock()

    def refused(self):
        """How many forks the pids limit has refused so far (None: no pids cgroup)."""
        if self.events is None:
            return None
        try:
            # read twice per command: one pread of a file kept open, not open+read+close
            # (kernfs generates the text afresh for each read at offset 0)
            if self.events_fd is None:
                self.events_fd = os.open(self.events, os.O_RDONLY | os.O_CLOEXEC)
            raw = os.pread(self.events_fd, 4096, 0)
            for line in raw.split(b"\n"):
                key, _, value = line.partition(b" ")
                if key == b"max":
                    return int(value)
        except (OSError, ValueError):
            return None
        return None

    def check(self):
        """Kill a fork bomb if the limit was hit since the last check; returns the count of
        refused forks as of now (None without a pids cgroup)."""
        refused = self.refused()
        if refused is None or refused == self.seen:
            return refused
        may_block()
        with self.lock:
            if refused == self.seen:
                return refused
            for _ in range(3):  # again while a session still holds half the limit
                if not self._kill_biggest():
                    break
                if self.reap:
                    # the killed processes' zombies hold their pids until reaped: free them
                    # now, or the next command's first fork fails at the limit again
                    for _ in range(20):
                        if not reap_orphans():
                            break
                        time.sleep(0.01)
            return self.account()  # and the forks refused while we were killing

    def account(self):
        """Take the forks refused so far as handled (their cause was killed); the count."""
        self.seen = self.refused()
        return self.seen

    def _kill_biggest(self):
        table = _proc_table()
        me, my_sid = os.getpid(), os.getsid(0)
        counts = collections.Counter(
            row[2] for pid, row in table.items() if pid != me and row[2] not in (my_sid, 0)
        )
        if not counts:
            return False
        sid, count = counts.most_common(1)[0]
        if self.limit is not None and self.limit.isdigit() and count * 2 < int(self.limit):
            # no process session holds half the limit: not a fork bomb (threads, or many
            # small jobs); the command that hit the limit gets a note, nothing is killed
            return False
        session = None
        for s in self.sessions():
            proc = s.proc
            if proc is not None and proc.pid == sid:
                session = s
        keep = {os.getpgid(0)}
        if session is not None:
            keep.add(sid)  # the session's bash stays: its own group is not killed
            count -= 1
        kill_tree(sid, frozenset(), keep, sid=sid)
        if session is None:
            try:
                os.kill(sid, signal.SIGKILL)  # the leader of a setsid'd or exec'd tree
            except OSError:
                pass
        where = "session %r" % session.name if session is not None else "process session %d" % sid
        note = (
            "pids limit reached (%s processes): killed %d processes of %s that were still "
            "forking (a fork bomb?)" % (self.limit, count, where)
        )
        self.log.append((self.kills + 1, sid, note))
        if session is not None:
            session.flooded = note
        self.kills += 1  # last: whoever sees the new count also sees the note
        return True

    def note_for(self, sid, mark):
        """What the guard killed in session ``sid`` after kill number ``mark``."""
        notes = [note for k, s, note in list(self.log) if k > mark and s == sid]
        return "; ".join(notes) or None


def _pids_files():
    """(path of pids.events, pids.max value) of our cgroup, v2 or v1; (None, None) if none."""
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/pids"):
        events = os.path.join(base, "pids.events")
        try:
            with open(os.path.join(base, "pids.max")) as f:
                limit = f.read().strip()
        except OSError:
            continue
        if os.path.exists(events):
            return events, limit
    return None, None


def _oom_kills():
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


#: the cgroup's OOM-kill count as last read (None: never read, or no memory cgroup)
_OOM_SEEN = [None]


def oom_baseline():
    """The OOM-kill count before a command, without a read per call: the last value read (the
    watchdog refreshes it once a second). Read now only the first time."""
    if _OOM_SEEN[0] is None:
        _OOM_SEEN[0] = _oom_kills()
    return _OOM_SEEN[0]


def oom_since(before, code, ended=False):
    """Whether the OOM killer struck since ``before``. Read only when the command's end says it
    was killed (a signal, an exit status over 128, bash gone): an OOM kill is a SIGKILL, so a
    normal exit needs no cgroup read. An unrelated OOM kill in the last second before the
    command started may be counted against a command that was killed anyway."""
    if not (ended or code is None or code < 0 or code >= 128):
        return False
    now = _oom_kills()
    if now is not None:
        _OOM_SEEN[0] = now
    return before is not None and now is not None and now > before


def _memory_limit():
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < (1 << 60):
            return int(raw)
    return None


def _rss_bytes(pid="self"):
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _describe_exit(code, oom):
    if oom:
        limit = _memory_limit()
        where = " (limit %d MiB)" % (limit // (1 << 20)) if limit else ""
        return "killed by the kernel OOM killer: the sandbox ran out of memory%s" % where
    if code is not None and code < 0:
        import signal as signal_mod

        try:
            return "killed by signal %s" % signal_mod.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return None


# --------------------------------------------------------------------------------------------
# persistent bash sessions


class _Call(object):
    """What one command in a session has produced so far, and how it is being stopped."""

    def __init__(self, seq, timeout, cap, cmd_file, old_children):
        self.seq = seq
        self.cmd_file = cmd_file
        self.old_children = old_children  # the session's jobs before this command
        self.capture = Capture(cap)
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.window = b""  # a tail kept back: the marker may be split across reads
        self.exit_code = None
        self.ended = False  # bash itself exited
        self.timed_out = False
        self.cancelled = False
        self.kill_attempts = 0
        self.last_cwd = None
        self.notes = []
        self.oom_before = None
        self.guard_mark = 0  # the pids guard's kill count when the command started
        self.refused_before = None  # forks refused at the pids limit before it started

    @property
    def stopping(self):
        return self.timed_out or self.cancelled


#: Written around every command (the command file is prefix + command + suffix). The prefix
#: puts back the user's DEBUG/RETURN traps and `set -x` that the previous suffix took away;
#: the suffix saves and clears them, so they fire for the user's commands only, never for the
#: wrapper's own lines (nor when the sourced file returns). Both groups send all their output,
#: trap actions and xtrace included, to /dev/null; the prefix stays on the command's first
#: line, so bash's line numbers in messages are the user's. `|| :` keeps `set -e` out of it.
_PREFIX = (
    '{ IFS= builtin read -r -d "" __ag_tv <"$__ag_tf" || builtin true; builtin eval "$__ag_tv"; '
    '[ -z "${__ag_x-}" ] || builtin set -x; } >/dev/null 2>&1; '
)
_SUFFIX = (
    "\n{ __ag_rc=$?; __ag_x=; case $- in *x*) __ag_x=x;; esac; builtin set +xv; "
    'builtin trap -p DEBUG RETURN >"$__ag_tf" || builtin true; builtin trap - DEBUG RETURN; '
    "} >/dev/null 2>&1; builtin return $__ag_rc\n"
)
#: ``builtin`` everywhere: a user's function may shadow any name; the classic fork bomb
#: defines ``:``, and a wrapper calling ``:`` would start it again before every command


_NO_ANSWER = "; bash did not answer after the kill: the session was restarted (state restored)"


class Session(object):
    """A named bash process whose cwd, env and functions persist across commands.

    Each command is written to a file and sourced with stdin from /dev/null; a marker printed
    after it carries the exit code. On timeout (or cancel) the agent SIGINTs bash (its trap
    returns from the sourced file) and SIGKILLs the processes the command created; if bash does
    not come back it is killed and restarted with the last saved cwd, exported env and functions.
    """

    def __init__(self, name, root, shell, cwd, env, guard=None):
        self.name = name
        self.lock = threading.Lock()
        self.shell = shell
        self.cwd = cwd
        self.env = env
        self.guard = guard
        safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
        self.dir = os.path.join(root, "s-%s" % safe)
        self.cmd_file = os.path.join(self.dir, "cmd")
        #: bash's ``children`` file kept open: read once per command (see read_children)
        self.children_fd = None
        self.proc = None
        self.seq = 0
        self.token = b""
        self.restarts = 0
        self.flushes = 0  # markers sent by _flush (numbered: a late one never matches)
        self.unsent = False  # the last wrapper line met EPIPE: bash never got it
        self.cancel = threading.Event()
        #: set by the pids guard when it killed this session's processes: their output still
        #: in the pipe is dropped before the next command, which starts clean
        self.flooded = None

    @property
    def state_file(self):
        return os.path.join(self.dir, "state")

    @property
    def traps_file(self):
        return os.path.join(self.dir, "traps")

    def sanitize(self):
        """Put the session's private directory and files back in shape.

        Commands run as our uid and can reach them: a FIFO put in place of the command file,
        bash's saved state or its traps file would block us or bash on every later command
        (and the state is sourced again at each restart), a symlink would redirect our writes.
        Whatever is not a plain directory / regular file there is removed. Called where it
        costs nothing per call: at each bash start, after a timed-out or cancelled command and
        when writing the command file failed."""
        for path, kind in ((self.dir, stat_mod.S_ISDIR),) + tuple(
            (p, stat_mod.S_ISREG) for p in (self.cmd_file, self.state_file, self.traps_file)
        ):
            try:
                if not kind(os.lstat(path).st_mode):
                    _remove_path(path)
            except OSError:
                pass
            if kind is stat_mod.S_ISDIR:
                try:
                    os.makedirs(path, mode=0o700, exist_ok=True)
                except OSError:
                    pass

    def _start(self, restore):
        self.sanitize()
        cwd = self.cwd
        if restore is not None and os.path.isdir(restore):
            cwd = restore
        env = dict(os.environ)
        env.update({"PAGER": "cat", "GIT_PAGER": "cat", "MANPAGER": "cat", "TERM": "dumb"})
        env.update(self.env)
        try:
            self.proc = spawn(
                [self.shell, "--noprofile", "--norc"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise RpcError(
                -32001, "ShellNotFound", "shell %r not found in the sandbox" % self.shell
            )
        except OSError as exc:
            raise os_error(exc, cwd)
        self.flooded = None
        self.restore = False  # a fresh bash has no user traps nor xtrace to put back
        self.token = ("__AGENTIC_%s_" % os.urandom(8).hex()).encode()
        # After a command: the marker (the last field says what the next prefix has to put
        # back: "x" xtrace, "t" traps; empty: the prefix is left out), printed before bash
        # saves its state, so the reply need not wait for the save; bash saves it before it
        # reads the next command (a kill during that one restores it).
        done = (
            '__ag_rc=$?; __ag_r=${__ag_x-}; builtin test ! -s "$__ag_tf" || __ag_r=${__ag_r}t; '
            'builtin printf \'%s%%s:%%s:KIND:%%s\\n\' "$__ag_seq" "$__ag_rc" "$__ag_r"; '
            '{ builtin export -p; builtin declare -f; } 2>/dev/null >"$__ag_state"'
        ) % self.token.decode()
        after = 'builtin . "$__ag_c" </dev/null; ' + done.replace("KIND", "")
        lines = []
        if restore is not None and os.path.exists(self.state_file):
            lines.append("builtin . %s >/dev/null 2>&1" % _sh_quote(self.state_file))
        lines += [
            "builtin set -m",
            "builtin echo 1000 > /proc/self/oom_score_adj 2>/dev/null",
            "__ag_state=%s" % _sh_quote(self.state_file),
            "__ag_c=%s" % _sh_quote(self.cmd_file),
            '__ag_tf=%s; >"$__ag_tf"; __ag_x=' % _sh_quote(self.traps_file),
            # each command (the per-call line expands "${__ag[@]}" into `builtin eval <this>`)
            # and the EXIT trap: inline code, not a function, so the state save's `declare -f`
            # has nothing of ours to print and a user's `set -u` no unset "$2" to trip over
            "__ag=(builtin eval %s)" % _sh_quote(after),
            "builtin trap 'builtin return 130 2>/dev/null' INT",
            "builtin trap %s EXIT" % _sh_quote(done.replace("KIND", "exit")),
            "",
        ]
        self._send("\n".join(lines).encode())

    def _send(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            # bash died; the read loop notices. EPIPE: bash had closed its stdin already (it
            # was exiting), so this line provably never reached it (see _line_unread)
            self.unsent = True

    def _alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _children(self):
        """The session's jobs (bash's direct children) as of now."""
        pid = self.proc.pid
        if self.children_fd is None:
            try:
                self.children_fd = os.open(
                    "/proc/%d/task/%d/children" % (pid, pid), os.O_RDONLY | os.O_CLOEXEC
                )
            except OSError:
                return direct_children(pid)  # no such file (an old kernel): the slow way
        try:
            return read_children(self.children_fd)
        except (OSError, ValueError):
            return direct_children(pid)

    def close(self):
        proc = self.proc
        self.proc = None
        fd, self.children_fd = self.children_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if proc is not None:
            # the whole session: background jobs and their orphans included
            kill_tree(proc.pid, frozenset(), {os.getpgid(0)}, sid=proc.pid)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        if proc is not None:
            forget(proc)  # reaped above (poll or wait)
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass

    def run(self, command, timeout, cap):
        if not self.lock.acquire(False):
            may_block()  # another command runs in this session: wait without the reader
            self.lock.acquire()
        try:
            return self._run(command, timeout, cap)
        finally:
            self.lock.release()

    def _run(self, command, timeout, cap):
        restarted = False
        for attempt in (0, 1):
            if not self._alive():
                restarted = self.proc is not None
                self.close()
                self._start(None)
            call = self._begin(command, timeout, cap)
            self._wait(call)
            # bash was already dying (killed from outside, e.g. `kill -9 -1` in another
            # session, whose SIGKILL lands after this call's liveness check) and never read
            # the command's whole line: it provably did not run, so it runs in a fresh bash
            if attempt or not call.ended or call.stopping or not self._line_unread():
                break
        restarted_now = self._settle(call)
        return self._result(call, restarted or restarted_now)

    def _line_unread(self):
        """True when bash did not read the last wrapper line to its newline (FIONREAD on our
        write end counts what the reader has not taken; nothing else is written after it).
        bash reads a whole line before it parses any of it, so such a line never ran; a
        SIGKILL landing in bash's one-byte read can leave it one byte in. A write that met
        EPIPE (bash had already closed its end: it was exiting) left nothing to count."""
        if self.unsent:
            return True
        import fcntl
        import struct
        import termios

        try:
            buf = fcntl.ioctl(self.proc.stdin.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            return False
        return struct.unpack("i", buf)[0] > 0

    def _begin(self, command, timeout, cap):
        """Write the command file, drop a killed fork bomb's output, send the wrapper line."""
        self.seq += 1
        self.cancel.clear()
        cmd_file = self.cmd_file
        # the prefix only when the last command left traps or xtrace to restore: parsing and
        # running it is a quarter of bash's work for a trivial command
        prefix = _PREFIX.encode() if self.restore else b""
        text = prefix + command.encode("utf-8", "surrogateescape") + _SUFFIX.encode()
        try:
            _write_file(cmd_file, text)
        except OSError:
            self.sanitize()  # the directory is gone, or a command put something else there
            _write_file(cmd_file, text)
        refused_before, guard_mark, notes = None, 0, []
        if self.guard is not None:
            # a bomb left by an earlier command is killed before this one starts
            refused_before = self.guard.check()
            guard_mark = self.guard.kills
        if self.flooded is not None:
            flooded, self.flooded = self.flooded, None
            dropped = []  # sizes only: what they print is not kept
            answered = self._flush(lambda data: dropped.append(len(data)))
            notes.append(
                "%s; %d bytes of their output were discarded%s"
                % (flooded, sum(dropped), "" if answered else _NO_ANSWER)
            )
        call = _Call(self.seq, timeout, cap, cmd_file, self._children())
        call.refused_before, call.guard_mark = refused_before, guard_mark
        call.notes += notes
        call.oom_before = oom_baseline()
        # short: bash reads a line from a pipe one byte (one syscall) at a time
        line = ('__ag_seq=%d;"${__ag[@]}"\n' % self.seq).encode()
        self.unsent = False
        self._send(line)
        return call

    def _wait(self, call):
        """Read output until the marker, the end of bash, or the interrupts run out."""
        fd = self.proc.stdout.fileno()
        marker = self.token + str(call.seq).encode() + b":"
        # small reads first: a 1 MiB buffer is an mmap + mremap + munmap for every read, and
        # most commands print little; a read that fills the buffer switches to big ones
        size = 1 << 16
        while True:
            if not self._check_stop(call):
                return
            wait = max(0.0, min(call.deadline - time.monotonic(), 0.25))
            if getattr(_TL, "release", None) is not None:
                # run inline by the request reader: a command still running INLINE_WAIT after
                # its start (quiet or printing) hands the reading over (cancel gets through)
                left = call.started + INLINE_WAIT - time.monotonic()
                if left <= 0:
                    may_block()
                    continue
                ready, _, _ = select.select([fd], [], [], min(wait, left))
                if not ready:
                    continue
            else:
                ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                if not self._alive():
                    # exited without a marker (exec, kill -9, exit inside a trap...)
                    call.capture.feed(_drain(fd))
                    call.ended = True
                    call.exit_code = self.proc.returncode
                    return
                continue
            data = os.read(fd, size)
            if len(data) == size:
                size = 1 << 20
            if not data:
                self.proc.wait()
                call.ended = True
                call.exit_code = self.proc.returncode
                return
            if self._feed(call, fd, marker, data):
                return

    def _check_stop(self, call):
        """Start or continue stopping a command that timed out or was cancelled; False once
        the interrupts are spent (bash ignores them: it is killed afterwards)."""
        now = time.monotonic()
        if call.exit_code is None and not call.stopping:
            if self.cancel.is_set():
                call.cancelled = True
            elif now >= call.deadline:
                call.timed_out = True
            if call.stopping:
                call.deadline = now  # start the interrupt sequence below
        if call.stopping and now >= call.deadline:
            if call.kill_attempts >= 8:
                return False
            call.kill_attempts += 1
            if call.last_cwd is None:
                call.last_cwd = _proc_cwd(self.proc.pid)
            self._interrupt(call.old_children)
            call.deadline = time.monotonic() + 0.1
        return True

    def _feed(self, call, fd, marker, data):
        """Capture output; True when this command's marker (and its exit code) arrived."""
        buf = call.window + data
        pos = buf.find(marker)
        if pos < 0:
            keep = max(0, len(buf) - len(marker) - 64)
            call.capture.feed(buf[:keep])
            call.window = buf[keep:]
            return False
        call.capture.feed(buf[:pos])
        rest = buf[pos + len(marker) :]
        while b"\n" not in rest:
            more = os.read(fd, 4096)
            if not more:
                break
            rest += more
        line, _, after = rest.partition(b"\n")
        fields = line.split(b":")
        try:
            call.exit_code = int(fields[0])
        except ValueError:
            call.exit_code = -1
        # no marker field (an old state, a bash we cannot read): restore to be safe
        self.restore = len(fields) < 3 or fields[2].strip() != b""
        if len(fields) > 1 and fields[1] == b"exit":
            call.ended = True
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        if after:
            call.capture.feed(after)
        return True

    def _settle(self, call):
        """Leave a usable session behind; True if bash was restarted for it."""
        if call.exit_code is None:
            # bash ignored the interrupt (trap removed, builtin loop in a subshell...): kill it
            # and restore its state so the session stays usable.
            cwd = _proc_cwd(self.proc.pid) or call.last_cwd
            kill_tree(self.proc.pid, call.old_children, {os.getpgid(0)}, sid=self.proc.pid)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            call.capture.feed(_drain(self.proc.stdout.fileno()))
            self.close()
            self._start(cwd)
            return True
        if call.ended and call.stopping:
            # our interrupt killed bash (the command removed the INT trap): restore its state
            self.close()
            self._start(call.last_cwd)
            return True
        if call.ended:
            self.close()  # the command exited the shell: a fresh one on next use
        elif call.stopping:
            self.sanitize()  # a FIFO in place of a wrapper file would hang every later command
        return False

    def _result(self, call, restarted):
        oom = oom_since(call.oom_before, call.exit_code, call.ended or call.stopping)
        if self.guard is not None:
            # under the guard's lock: a kill in progress (it may be what ended this command) is
            # logged first, and the watchdog does not kill again what is ended here
            with self.guard.lock:
                note = self.guard.note_for(self.proc.pid if self.proc else None, call.guard_mark)
                if note:
                    call.notes.append(note)
                    self.flooded = None  # reported here: what is left in the pipe is this call's
                    if self._alive() and not self._flush(call.capture.feed):
                        call.notes.append(_NO_ANSWER[2:])
                elif (self.guard.refused() or 0) > (call.refused_before or 0):
                    call.notes.append(self._end_leftovers(call))
                    self.guard.account()  # the watchdog does not kill again what ended here
        output = call.capture.text()
        # bash names the sourced file in its messages ("<file>: line 1: 17 Killed  sleep 60")
        output = output.replace(call.cmd_file + ": ", "bash: ")
        result = {
            "output": output,
            "exit_code": call.exit_code,
            "timed_out": call.timed_out,
            "cancelled": call.cancelled,
            "elided_bytes": call.capture.elided,
            "total_bytes": call.capture.total,
            "duration": round(time.monotonic() - call.started, 6),
            "session_ended": call.ended,
            "session_restarted": restarted,
            "oom_killed": oom,
        }
        if call.ended and call.exit_code is not None and call.exit_code < 0:
            result["exit_code"] = 128 - call.exit_code
        note = _describe_exit(call.exit_code if not call.ended else None, oom)
        if note:
            call.notes.insert(0, note)
        if call.notes:
            result["note"] = "; ".join(call.notes)
        return result

    def _flush(self, sink, timeout=5.0):
        """Pass ``sink`` all that is in bash's output pipe before bash next reads a command.

        After a kill of processes sharing the pipe, what they printed is there, but bash
        reports the jobs it lost ("line 3: 14 Killed ...") only after the next command it
        reads: bash is sent a no-op, then a line printing a fresh marker, and everything
        before that marker is passed on. A bash that does not answer in ``timeout`` is
        restarted (the marker holds the session's token: it must never reach an output)."""
        may_block()  # waits for bash (after a kill: rare): not on the request reader
        self.flushes += 1
        mark = self.token + b"flush%d\n" % self.flushes
        # bash reports lost jobs after the command it read next: a no-op first, then the marker
        self._send(b"builtin true\nbuiltin printf '%s\\n' '" + mark[:-1] + b"'\n")
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        window = b""
        while True:
            left = deadline - time.monotonic()
            ready = left > 0 and select.select([fd], [], [], left)[0]
            data = os.read(fd, 1 << 16) if ready else b""
            if not data:
                break
            buf = window + data
            pos = buf.find(mark)
            if pos >= 0:
                sink(buf[:pos])
                rest = buf[pos + len(mark) :]
                if rest:
                    sink(rest)  # a survivor of the kill still printing
                return True
            keep = max(0, len(buf) - len(mark))
            sink(buf[:keep])
            window = buf[keep:]
        sink(window)
        # the state (env, functions) is restored even when bash's cwd cannot be read any more
        cwd = (_proc_cwd(self.proc.pid) if self.proc is not None else None) or self.cwd
        self.close()
        self._start(cwd)
        return False

    def _end_leftovers(self, call):
        """The command hit the pids limit: what it left running (a fork bomb whose first
        generation returned) is killed now rather than flooding the next command (called with
        the guard's lock held)."""
        left, answered = [], True
        if self._alive():
            root = self.proc.pid
            left = command_processes(root, call.old_children, sid=root)
            if left:
                kill_tree(root, call.old_children, {root, os.getpgid(0)}, sid=root)
                # what they printed after this command's marker ("fork: retry" lines) and
                # bash's report of the jobs killed belong to this command's output (capped
                # as the rest), not to the next command's
                answered = self._flush(call.capture.feed)
        what = "killed %d processes it left running" % len(left) if left else "some forks failed"
        return "pids limit reached (%s processes) during this command: %s%s" % (
            self.guard.limit,
            what,
            "" if answered else _NO_ANSWER,
        )

    def _interrupt(self, old_children):
        try:
            os.kill(self.proc.pid, signal.SIGINT)
        except OSError:
            pass
        kill_tree(self.proc.pid, old_children, {self.proc.pid, os.getpgid(0)}, sid=self.proc.pid)


def _write_file(path, data):
    """Write a small file in three syscalls (open() adds fstat, ioctl and lseek to each).

    Our files are reachable by the commands (same uid): never through a symlink put in their
    place (ELOOP) and never blocking on a FIFO (ENXIO when nobody reads it); the caller
    clears the path (Session.sanitize) and writes again."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _remove_path(path):
    """Remove a file, FIFO, symlink (not its target) or directory tree."""
    if stat_mod.S_ISDIR(os.lstat(path).st_mode):
        import shutil  # rare path: not loaded at start-up

        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def _proc_cwd(pid):
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return None


def _drain(fd):
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            return out
        data = os.read(fd, 1 << 20)
        if not data:
            return out
        out += data


def _sh_quote(s):
    return "'" + s.replace("'", "'\"'\"'") + "'"


# --------------------------------------------------------------------------------------------
# the agent


class Agent(object):
    def __init__(self, in_fd, out_fd):
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.channel = None  # the direct socket (connect_direct), when there is one
        self.write_lock = threading.Lock()
        self.sessions = {}
        self.sessions_lock = threading.Lock()
        self.running = {}  # id -> cancel callable
        self.state_lock = threading.Lock()
        self.replies = collections.OrderedDict()
        self.seen = set()
        self.seen_order = collections.deque()
        self.uploads = {}
        self.tasks = queue.Queue()
        self.idle = 0  # workers waiting for a request
        self.queued = 0  # requests submitted and not yet taken by a worker
        self.workers = 0
        self.reader_id = None  # the thread now reading requests
        self.started = time.time()
        self.root = _make_private_dir()
        self.guard = PidsGuard(self._live_sessions, reap=os.getpid() == 1)
        self.shell = "/bin/bash" if os.path.exists("/bin/bash") else "bash"
        self.methods = {
            "ping": self.m_ping,
            "info": self.m_info,
            "session.run": self.m_session_run,
            "session.close": self.m_session_close,
            "exec": self.m_exec,
            "cancel": self.m_cancel,
            "file.read": self.m_file_read,
            "file.write": self.m_file_write,
            "file.stat": self.m_file_stat,
            "file.list": self.m_file_list,
            "file.remove": self.m_file_remove,
            "file.mkdir": self.m_file_mkdir,
            "search": self.m_search,
            "tar.get": self.m_tar_get,
            "tar.put": self.m_tar_put,
            "fs.diff": lambda rid, params: fs_diff(self, rid, params),
            "fs.apply": self.m_fs_apply,
            "shutdown": self.m_shutdown,
        }
        self.inline = {"ping", "cancel", "info"}

    def _live_sessions(self):
        with self.sessions_lock:
            return list(self.sessions.values())

    # ---- transport

    def send(self, obj):
        self._write_raw(self._encode(obj))

    def serve(self):
        reader = os.fdopen(self.in_fd, "rb", buffering=1 << 16)
        done = threading.Event()
        try:
            self._serve_loop(reader, done)
        except BaseException:
            done.set()
            raise
        done.wait()  # the reading may have moved to a worker: until the stream ends

    def _hand_off(self, reader, done):
        """Move the reading of requests to a worker (the current reader runs a long call)."""
        self.reader_id = None

        def serve_on():
            try:
                self._serve_loop(reader, done)  # sets done at the end of the stream
            except BaseException:
                done.set()  # an error here ends serving, as it does in the main thread
                raise

        self._submit_item(serve_on)

    def _serve_loop(self, reader, done):
        me = threading.get_ident()
        self.reader_id = me
        while True:
            if self.reader_id != me:
                return  # an inline call handed the reading to another thread
            line = reader.readline(MAX_FRAME + 1)
            if not line:
                done.set()
                return
            if len(line) > MAX_FRAME and not line.endswith(b"\n"):
                while True:  # skip the rest of the oversized frame
                    more = reader.readline(1 << 20)
                    if not more or more.endswith(b"\n"):
                        break
                self.send(
                    {
                        "id": None,
                        "error": RpcError(
                            -32700, "FrameTooLarge", "frame exceeds %d bytes" % MAX_FRAME
                        ).to_wire(),
                    }
                )
                continue
            if line.strip():
                self.handle_frame(line, reader, done)

    def handle_frame(self, line, reader=None, done=None):
        """One request frame: parse and check it, refuse a repeated id, then run it."""
        request = self._parse_request(line)
        if request is None:
            return
        rid, msg = request
        if "chunk" in msg or "eof" in msg:
            self._upload_data(rid, msg)
            return
        method = msg.get("method")
        params = msg.get("params", {})
        if not isinstance(method, str):
            self._reject(rid, -32600, "InvalidRequest", "request needs a string 'method'")
            return
        if not isinstance(params, dict):
            self.send({"id": rid, "error": invalid_params("'params' must be an object").to_wire()})
            return
        if self._admit(rid):
            self._dispatch(rid, method, params, reader, done)

    def _reject(self, rid, code, name, message):
        self.send({"id": rid, "error": RpcError(code, name, message).to_wire()})

    def _parse_request(self, line):
        """(id, frame) of a well-formed frame; None after answering a malformed one."""
        try:
            msg = json_loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            self._reject(None, -32700, "MalformedFrame", "frame is not valid UTF-8 JSON: %s" % exc)
            return None
        if not isinstance(msg, dict):
            self._reject(None, -32600, "InvalidRequest", "frame must be a JSON object")
            return None
        rid = msg.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            self._reject(None, -32600, "InvalidRequest", "frame needs an 'id' (string or integer)")
            return None
        return rid, msg

    def _admit(self, rid):
        """Record a new request id. A repeated one never runs twice: a finished one gets its
        cached reply (or DuplicateRequest once evicted), a running one its one reply later."""
        with self.state_lock:
            if rid in self.seen:
                cached = self.replies.get(rid)
                if cached is None and rid not in self.running:
                    cached = self._encode(
                        {
                            "id": rid,
                            "error": RpcError(
                                -32002,
                                "DuplicateRequest",
                                "request id %r was already executed; not running it again" % (rid,),
                            ).to_wire(),
                        }
                    )
                if cached is not None:
                    self._write_raw(cached)
                return False  # running: its one reply answers both
            self.seen.add(rid)
            self.seen_order.append(rid)
            if len(self.seen_order) > SEEN_IDS:
                self.seen.discard(self.seen_order.popleft())
            self.running[rid] = None
            return True

    def _dispatch(self, rid, method, params, reader, done):
        """Run inline (cheap methods; a session.run likely to end soon) or on a worker."""
        if method in UPLOAD_METHODS:
            self.uploads[rid] = queue.Queue(maxsize=64)
        if method in self.inline:
            self.execute(rid, method, params)
        elif (
            method == "session.run"
            and reader is not None
            and self.reader_id == threading.get_ident()
            and self.idle > self.queued
        ):
            # Optimistically inline: most commands end within INLINE_WAIT, and a hand-off to
            # a worker thread costs more CPU than the call itself. One that would wait
            # longer hands the reading of requests to a worker first (may_block).
            _TL.release = lambda: self._hand_off(reader, done)
            try:
                self.execute(rid, method, params)
            finally:
                _TL.release = None
        else:
            self._submit(rid, method, params)

    def _encode(self, obj):
        return (json_dumps(obj) + "\n").encode("utf-8")

    def _write_raw(self, data):
        """Write a whole frame: a short write (a socket in TCP mode) must not cut it."""
        with self.write_lock:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self.out_fd, view)
                except InterruptedError:
                    continue
                except OSError:
                    return  # host went away; the read loop will see EOF
                view = view[n:]

    # ---- workers

    def _spawn_worker(self):
        # counted idle from the start: a worker that is still starting will take a request
        with self.state_lock:
            self.idle += 1
            self.workers += 1
        try:
            threading.Thread(target=self._worker, name="agentic-worker", daemon=True).start()
        except RuntimeError:
            with self.state_lock:
                self.idle -= 1
                self.workers -= 1
            raise

    def _submit(self, rid, method, params):
        self._submit_item((rid, method, params))

    def _submit_item(self, item):
        # Count the requests still in the queue, not only the idle workers: a burst arrives
        # before any idle worker has taken a request, and counting idle workers alone ran 20
        # concurrent `sleep 1` in waves of MIN_WORKERS.
        with self.state_lock:
            self.queued += 1
            missing = self.queued - self.idle
            if self.workers < MIN_WORKERS:
                # first requests: a few workers at once, so a later fork bomb cannot starve us
                missing = max(missing, MIN_WORKERS - self.workers)
            missing = min(missing, MAX_WORKERS - self.workers)
        for _ in range(missing):
            try:
                self._spawn_worker()
            except RuntimeError:
                break  # pids limit reached (fork bomb): the request waits for a free worker
        self.tasks.put(item)

    def _worker(self):
        while True:
            item = self.tasks.get()
            with self.state_lock:
                self.idle -= 1
                if item is not None:
                    self.queued -= 1
            if item is None:
                return
            if callable(item):
                item()  # the request reader, handed over by an inline call
            else:
                self.execute(*item)
            with self.state_lock:
                self.idle += 1

    def execute(self, rid, method, params):
        func = self.methods.get(method)
        try:
            if func is None:
                raise RpcError(
                    -32601,
                    "MethodNotFound",
                    "unknown method %r; known: %s" % (method, ", ".join(sorted(self.methods))),
                )
            reply = {"id": rid, "result": func(rid, params)}
        except RpcError as exc:
            reply = {"id": rid, "error": exc.to_wire()}
        except OSError as exc:
            reply = {"id": rid, "error": os_error(exc).to_wire()}
        except Exception as exc:  # the agent never dies of one request
            reply = {
                "id": rid,
                "error": RpcError(
                    -32603, "InternalError", "%s: %s" % (type(exc).__name__, exc)
                ).to_wire(),
            }
        data = self._encode(reply)
        with self.state_lock:
            self.running.pop(rid, None)
            self.uploads.pop(rid, None)
            if len(data) <= REPLY_CACHE_MAX_BYTES:
                self.replies[rid] = data
                while len(self.replies) > REPLY_CACHE:
                    self.replies.popitem(last=False)
        self._write_raw(data)

    def close(self):
        with self.sessions_lock:
            sessions = list(self.sessions.values())
            self.sessions.clear()
        for s in sessions:
            try:
                s.close()
            except Exception:
                pass

    # ---- methods

    def m_ping(self, rid, params):
        return {"pong": True, "version": PROTOCOL_VERSION, "pid": os.getpid(), "time": time.time()}

    def m_info(self, rid, params):
        return {
            "version": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "cwd": os.getcwd(),
            "python": sys.version.split()[0],
            "rss_bytes": _rss_bytes(),
            "memory_limit": _memory_limit(),
            "uptime": round(time.time() - self.started, 3),
            "sessions": sorted(self.sessions),
            "hardening": dict(harden()),
            "pids_guard_kills": self.guard.kills,
        }

    def m_shutdown(self, rid, params):
        threading.Timer(0.05, lambda: os._exit(0)).start()
        self.close()
        return {"ok": True}

    def _session(self, params):
        name = _param(params, "session", str, "default")
        with self.sessions_lock:
            s = self.sessions.get(name)
            if s is None:
                cwd = _param(params, "cwd", str, None) or os.getcwd()
                s = Session(name, self.root, self.shell, cwd, _env_param(params), self.guard)
                self.sessions[name] = s
        return s

    def m_session_run(self, rid, params):
        command = _param(params, "command", str, required=True)
        timeout = _timeout_param(params)
        cap = _max_output_param(params)
        s = self._session(params)
        with self.state_lock:
            self.running[rid] = s.cancel.set
        return s.run(command, timeout, cap)

    def m_session_close(self, rid, params):
        name = _param(params, "session", str, "default")
        with self.sessions_lock:
            s = self.sessions.pop(name, None)
        if s is not None:
            s.close()
        return {"closed": s is not None}

    def m_cancel(self, rid, params):
        target = _param(params, "target", (str, int), required=True)
        with self.state_lock:
            fn = self.running.get(target)
        if fn is not None:
            fn()
        return {"cancelled": fn is not None}

    def _exec_argv(self, params):
        """An exec request's argv: 'argv' as given, or 'command' run by the shell."""
        argv = params.get("argv")
        command = params.get("command")
        if argv is not None:
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise invalid_params("parameter 'argv' must be a non-empty list of strings")
            return argv
        if isinstance(command, str):
            return [self.shell if os.path.exists(self.shell) else "/bin/sh", "-c", command]
        raise invalid_params("exec needs 'argv' (list of strings) or 'command' (string)")

    def m_exec(self, rid, params):
        argv = self._exec_argv(params)
        timeout = _timeout_param(params)
        cap = _max_output_param(params)
        cwd = _param(params, "cwd", str, None)
        env = dict(os.environ)
        if _param(params, "clear_env", bool, False):
            env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
        env.update(_env_param(params))
        started = time.monotonic()
        oom_before = oom_baseline()
        guard_mark = self.guard.kills
        try:
            proc = spawn(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            if cwd and not os.path.isdir(cwd):
                raise os_error(exc, cwd)
            raise RpcError(
                -32001, "CommandNotFound", "command not found: %s" % argv[0], {"argv": argv}
            )
        except OSError as exc:
            raise os_error(exc, argv[0])
        cancel = threading.Event()
        with self.state_lock:
            self.running[rid] = cancel.set
        out, err = Capture(cap), Capture(cap)
        timed_out, cancelled = _pump_exec(proc, out, err, started + timeout, cancel)
        code = proc.wait()
        forget(proc)
        proc.stdout.close()
        proc.stderr.close()
        oom = oom_since(oom_before, code, timed_out or cancelled)
        result = {
            "stdout": out.text(),
            "stderr": err.text(),
            "exit_code": code if code >= 0 else 128 - code,
            "timed_out": timed_out,
            "cancelled": cancelled,
            "elided_bytes": out.elided + err.elided,
            "total_bytes": out.total + err.total,
            "duration": round(time.monotonic() - started, 6),
            "oom_killed": oom,
        }
        notes = [_describe_exit(code, oom), self.guard.note_for(proc.pid, guard_mark)]
        if any(notes):
            result["note"] = "; ".join(n for n in notes if n)
        return result

    def m_file_read(self, rid, params):
        path = _path_param(params)
        offset = _param(params, "offset", int, 0)
        length = _param(params, "length", int, None)
        if offset < 0 or (length is not None and length < 0):
            raise invalid_params("'offset' and 'length' must be >= 0")
        if length is None or length > MAX_READ:
            length = MAX_READ
        with open_regular(path, os.O_RDONLY) as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(length)
        return {
            "data": base64.b64encode(data).decode("ascii"),
            "size": size,
            "offset": offset,
            "eof": offset + len(data) >= size,
        }

    def m_file_write(self, rid, params):
        path = _path_param(params)
        data = params.get("data", "")
        if not isinstance(data, str):
            raise invalid_params("parameter 'data' must be a base64 string")
        try:
            raw = base64.b64decode(data.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise invalid_params("parameter 'data' is not valid base64")
        mode = _param(params, "mode", int, None)
        parents = _param(params, "parents", bool, True)
        exclusive = _param(params, "exclusive", bool, False)
        append = _param(params, "append", bool, False)
        directory = os.path.dirname(os.path.abspath(path))
        if parents:
            os.makedirs(directory, exist_ok=True)
        if exclusive and os.path.lexists(path):
            raise RpcError(-32001, "FileExists", "File exists: %s" % path, {"path": path})
        if os.path.isdir(path):
            raise RpcError(-32001, "IsADirectory", "Is a directory: %s" % path, {"path": path})
        if append:
            with open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) as f:
                f.write(raw)
            return {"size": os.path.getsize(path), "path": path}
        # never leave a half-written file: write a sibling temp file, then rename over
        try:
            old_mode = stat_mod.S_IMODE(os.stat(path).st_mode)
        except OSError:
            old_mode = None
        tmp = os.path.join(directory, ".agentic-%s.tmp" % os.urandom(6).hex())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise os_error(exc, path)  # name the user's path, not our temp file
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            final = (
                mode
                if mode is not None
                else (old_mode if old_mode is not None else 0o644 & ~_umask())
            )
            os.chmod(tmp, final)
            os.replace(tmp, path)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise os_error(exc, path)
            raise
        return {"size": len(raw), "path": path}

    def m_file_stat(self, rid, params):
        path = _path_param(params)
        follow = _param(params, "follow_symlinks", bool, True)
        st = os.stat(path) if follow else os.lstat(path)
        d = _stat_dict(path, st)
        d["realpath"] = os.path.realpath(path)
        return d

    def m_file_list(self, rid, params):
        path = _path_param(params)
        depth = _param(params, "depth", int, 1)
        hidden = _param(params, "include_hidden", bool, True)
        limit = _param(params, "max_entries", int, 10000)
        if not os.path.isdir(path):
            os.stat(path)  # raises FileNotFound / PermissionDenied
            raise RpcError(-32001, "NotADirectory", "Not a directory: %s" % path, {"path": path})
        entries = []
        truncated = False
        stack = [(path, 1)]
        while stack and not truncated:
            current, level = stack.pop()
            try:
                with os.scandir(current) as it:
                    items = sorted(it, key=lambda e: e.name)
            except OSError:
                if current == path:
                    raise
                continue
            for e in items:
                if not hidden and e.name.startswith("."):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                d = _stat_dict(e.path, st)
                d["name"] = e.name
                entries.append(d)
                if len(entries) >= limit:
                    truncated = True
                    break
                if d["type"] == "directory" and level < depth:
                    stack.append((e.path, level + 1))
        entries.sort(key=lambda d: d["path"])
        return {"entries": entries, "truncated": truncated}

    def m_file_remove(self, rid, params):
        path = _path_param(params)
        recursive = _param(params, "recursive", bool, False)
        if os.path.isdir(path) and not os.path.islink(path):
            if recursive:
                import shutil

                shutil.rmtree(path)
            else:
                os.rmdir(path)
        else:
            os.unlink(path)
        return {"removed": True}

    def m_file_mkdir(self, rid, params):
        path = _path_param(params)
        os.makedirs(path, exist_ok=_param(params, "exist_ok", bool, True))
        return {"path": path}

    def m_search(self, rid, params):
        """Content search (regex) or file-name search (glob), pure Python: no grep/rg needed."""
        root = _path_param(params)
        pattern = _param(params, "pattern", str, required=True)
        mode = _param(params, "mode", str, "content")
        include = _param(params, "include", list, [])
        exclude_dirs = set(
            _param(params, "exclude_dirs", list, [".git", "node_modules", "__pycache__", ".venv"])
        )
        context = _param(params, "context", int, 0)
        limit = _param(params, "max_results", int, 1000)
        ignore_case = _param(params, "ignore_case", bool, False)
        fixed = _param(params, "fixed_string", bool, False)
        max_file = _param(params, "max_file_size", int, 4 * 1024 * 1024)
        import fnmatch

        if mode not in ("content", "files"):
            raise invalid_params("parameter 'mode' must be 'content' or 'files'")
        if not os.path.exists(root):
            os.stat(root)
        matches = []
        files_with = collections.OrderedDict()
        truncated = False
        scanned = 0
        flags = re.IGNORECASE if ignore_case else 0
        if mode == "content":
            try:
                rx = re.compile(re.escape(pattern) if fixed else pattern, flags)
            except re.error as exc:
                raise invalid_params("invalid regular expression %r: %s" % (pattern, exc))
        skipped = []  # non-regular files: reading a FIFO blocks, a device never ends
        for path in _walk_files(root, exclude_dirs):
            rel = os.path.relpath(path, root) if os.path.isdir(root) else os.path.basename(path)
            name = os.path.basename(path)
            if mode == "files":
                target = name if "/" not in pattern else rel
                if fnmatch.fnmatch(
                    target.lower() if ignore_case else target,
                    pattern.lower() if ignore_case else pattern,
                ):
                    matches.append({"path": path})
                    if len(matches) >= limit:
                        truncated = True
                        break
                continue
            if include and not any(
                fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in include
            ):
                continue
            raw = _read_for_search(path, max_file, skipped)
            if raw is None:
                continue
            scanned += 1
            if b"\0" in raw[:8192]:
                continue
            lines = raw.decode("utf-8", "replace").splitlines()
            for i, line in enumerate(lines):
                if rx.search(line):
                    m = {"path": path, "line": i + 1, "text": line[:2000]}
                    if context:
                        m["before"] = lines[max(0, i - context) : i]
                        m["after"] = lines[i + 1 : i + 1 + context]
                    matches.append(m)
                    files_with[path] = files_with.get(path, 0) + 1
                    if len(matches) >= limit:
                        truncated = True
                        break
            if truncated:
                break
        return {
            "matches": matches,
            "truncated": truncated,
            "files_scanned": scanned,
            "files": [{"path": p, "count": c} for p, c in files_with.items()],
            "skipped": skipped[:100],
            "skipped_count": len(skipped),
        }

    def m_tar_get(self, rid, params):
        paths = _param(params, "paths", list, required=True)
        base = _param(params, "base", str, "/")
        compress = _param(params, "compress", bool, False)
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise invalid_params("parameter 'paths' must be a non-empty list of paths")
        for p in paths:
            os.lstat(os.path.join(base, p))  # FileNotFound before any byte is streamed
        max_bytes = _param(params, "max_bytes", int, None)
        allow_sparse = _param(params, "allow_sparse", bool, False)
        import tarfile

        guard = _TarGuard(max_bytes, allow_sparse)
        sink = _ChunkSink(self, rid)
        with tarfile.open(fileobj=sink, mode="w|gz" if compress else "w|") as tar:
            for p in paths:
                source = os.path.join(base, p)
                arcname = os.path.normpath(p).lstrip("/") or "."
                guard.root = (source, arcname)
                tar.add(source, arcname=arcname, filter=guard)
        sink.flush()
        return {"bytes": sink.total, "chunks": sink.count}

    def m_tar_put(self, rid, params):
        dest = _path_param(params, "dest")
        with self.state_lock:
            q = self.uploads.get(rid)
        if q is None:
            raise RpcError(-32600, "InvalidRequest", "upload %r has no data channel" % (rid,))
        import tarfile

        os.makedirs(dest, exist_ok=True)
        source = _QueueReader(q)
        count = 0
        real_dest = os.path.realpath(dest)
        try:
            with tarfile.open(fileobj=source, mode="r|*") as tar:
                for member in tar:
                    target = os.path.realpath(os.path.join(real_dest, member.name))
                    if member.name.startswith("/") or not (
                        target == real_dest or target.startswith(real_dest + os.sep)
                    ):
                        raise RpcError(
                            -32602,
                            "UnsafeArchive",
                            "archive member %r escapes %s" % (member.name, dest),
                        )
                    if member.isdev():
                        continue
                    if member.islnk() or member.issym():
                        link_target = os.path.realpath(
                            os.path.join(os.path.dirname(target), member.linkname)
                            if member.issym()
                            else os.path.join(real_dest, member.linkname)
                        )
                        if member.islnk() and not link_target.startswith(real_dest + os.sep):
                            raise RpcError(
                                -32602,
                                "UnsafeArchive",
                                "hard link %r escapes %s" % (member.name, dest),
                            )
                    tar.extract(member, real_dest, set_attrs=os.getuid() == 0)
                    count += 1
        except tarfile.TarError as exc:
            raise RpcError(-32602, "InvalidArchive", "upload is not a valid tar stream: %s" % exc)
        finally:
            source.drain()
        return {"members": count, "bytes": source.total, "dest": dest}

    def m_fs_apply(self, rid, params):
        with self.state_lock:
            q = self.uploads.get(rid)
        if q is None:
            raise RpcError(-32600, "InvalidRequest", "upload %r has no data channel" % (rid,))
        source = _QueueReader(q)
        try:
            return fs_apply(self, rid, params, source)
        finally:
            source.drain()

    def _upload_data(self, rid, msg):
        with self.state_lock:
            q = self.uploads.get(rid)
        if q is None:
            return  # upload already failed or finished: drop late chunks
        if msg.get("eof"):
            q.put(b"")
            return
        try:
            q.put(base64.b64decode(msg.get("chunk", "")))
        except (ValueError, TypeError):
            q.put(None)


#: a file this big whose allocated blocks cover less than half of it is refused by tar.get
SPARSE_MIN_SIZE = 1 << 20


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0


class _TarGuard(object):
    """tarfile ``filter``: refuses sparse files and archives over ``max_bytes`` before a member
    is written. Python's tarfile writes a sparse file's holes as zeros: a 4 GiB file of holes,
    made in a millisecond with ``truncate -s 4G``, would cross the stream as 4 GiB."""

    def __init__(self, max_bytes, allow_sparse):
        self.root = ("", "")  # (path, its name in the archive) of the tree being added
        self.max_bytes = max_bytes
        self.allow_sparse = allow_sparse
        self.total = 0

    def __call__(self, info):
        if not info.isreg():
            return info
        source, arcname = self.root
        path = source + info.name[len(arcname) :]
        if not self.allow_sparse and info.size >= SPARSE_MIN_SIZE:
            try:
                allocated = os.lstat(path).st_blocks * 512
            except (OSError, AttributeError):
                allocated = info.size
            if allocated * 2 < info.size:
                raise RpcError(
                    -32001,
                    "ArchiveTooLarge",
                    "%s is a sparse file (%s apparent, %s allocated): a download would expand "
                    "its holes to zeros; refused (allow_sparse=true sends it anyway)"
                    % (path, _size(info.size), _size(allocated)),
                    {"path": path, "size": info.size, "allocated": allocated},
                )
        self.total += info.size
        if self.max_bytes is not None and self.total > self.max_bytes:
            raise RpcError(
                -32001,
                "ArchiveTooLarge",
                "download exceeds max_bytes: %s of files reached at %s (limit %s)"
                % (_size(self.total), path, _size(self.max_bytes)),
                {"path": path, "bytes": self.total, "limit": self.max_bytes},
            )
        return info


class _ChunkSink(object):
    """File-like object tarfile writes into; sends CHUNK-sized stream frames."""

    def __init__(self, agent, rid):
        self.agent = agent
        self.rid = rid
        self.buf = bytearray()
        self.total = 0
        self.count = 0

    def write(self, data):
        self.buf += data
        while len(self.buf) >= CHUNK:
            self._emit(bytes(self.buf[:CHUNK]))
            del self.buf[:CHUNK]
        return len(data)

    def flush(self):
        if self.buf:
            self._emit(bytes(self.buf))
            self.buf = bytearray()

    def _emit(self, data):
        self.total += len(data)
        self.count += 1
        self.agent.send({"id": self.rid, "chunk": base64.b64encode(data).decode("ascii")})

    def tell(self):
        return self.total + len(self.buf)


class _QueueReader(object):
    """File-like object over upload chunks; b"" marks the end, None a corrupt chunk."""

    def __init__(self, q):
        self.q = q
        self.buf = b""
        self.done = False
        self.total = 0

    def read(self, n=-1):
        while not self.done and (n < 0 or len(self.buf) < n):
            try:
                item = self.q.get(timeout=300)
            except queue.Empty:
                raise RpcError(-32003, "Timeout", "upload stalled: no data for 300 s")
            if item is None:
                raise RpcError(-32602, "InvalidParams", "upload chunk is not valid base64")
            if item == b"":
                self.done = True
                break
            self.total += len(item)
            self.buf += item
        if n < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def drain(self):
        while not self.done:
            try:
                item = self.q.get(timeout=5)
            except queue.Empty:
                return
            if item in (b"", None):
                self.done = True


def _walk_files(root, exclude_dirs):
    if not os.path.isdir(root):
        yield root
        return
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in exclude_dirs)
        for name in sorted(files):
            yield os.path.join(current, name)


_KINDS = (
    (stat_mod.S_ISFIFO, "fifo", "a FIFO (named pipe)"),
    (stat_mod.S_ISSOCK, "socket", "a socket"),
    (stat_mod.S_ISCHR, "char-device", "a character device"),
    (stat_mod.S_ISBLK, "block-device", "a block device"),
)


def file_kind(mode):
    """('fifo', 'a FIFO (named pipe)')... for a file neither regular nor a directory."""
    for test, kind, name in _KINDS:
        if test(mode):
            return kind, name
    return "other", "not a regular file"


def not_regular(path, mode):
    kind, name = file_kind(mode)
    return RpcError(
        -32001,
        "NotARegularFile",
        "%s is %s, not a regular file: refused (reading it could block or never end)"
        % (path, name),
        {"path": path, "kind": kind},
    )


def open_regular(path, flags):
    """Open a regular file (binary, unbuffered for writes), refusing anything else.

    O_NONBLOCK: opening a FIFO with no writer (or a tty) would block the worker forever, and a
    FIFO put in place of a checked file would too: the check is on the descriptor we opened.
    """
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO with no reader for O_WRONLY
            raise not_regular(path, os.stat(path).st_mode)
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat_mod.S_ISDIR(mode):
            raise RpcError(-32001, "IsADirectory", "Is a directory: %s" % path, {"path": path})
        if not stat_mod.S_ISREG(mode):
            raise not_regular(path, mode)
        # O_NONBLOCK stays: it has no effect on regular files
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb" if flags & (os.O_WRONLY | os.O_RDWR) == 0 else "ab")


def _stat_dict(path, st):
    mode = st.st_mode
    if stat_mod.S_ISDIR(mode):
        kind = "directory"
    elif stat_mod.S_ISREG(mode):
        kind = "file"
    elif stat_mod.S_ISLNK(mode):
        kind = "symlink"
    else:
        kind = "other"
    return {
        "path": path,
        "type": kind,
        "size": st.st_size,
        "mode": stat_mod.S_IMODE(mode),
        "mtime": st.st_mtime,
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _make_private_dir():
    # /dev/shm first: a tmpfs. Every command writes its command file and bash its saved state
    # there; on a disk filesystem rewriting a file costs ~2 ms (ext4 flushes a truncated file
    # on close), most of a trivial call. Present and writable on read-only root filesystems.
    base = os.environ.get("TMPDIR") or "/tmp"
    for candidate in ("/dev/shm", base, "/tmp", os.getcwd()):
        path = os.path.join(candidate, "agentic-%d-%s" % (os.getpid(), os.urandom(4).hex()))
        try:
            os.mkdir(path, 0o700)
            return path
        except OSError:
            continue
    raise RuntimeError("no writable directory for the agent's session files")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _grow_pipe(fd):
    """A 1 MB pipe buffer for the reply stream (Linux; the default 64 KB makes a large reply
    wait on the reader every 64 KB). Best effort: not a pipe, or over pipe-max-size, is fine."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ
    except (ImportError, OSError):
        pass


def _reset_inherited_signals():
    """Undo an ignored or blocked SIGINT/SIGTERM/SIGQUIT inherited from whoever started us (a
    background job of a script, a library's thread): bash started with SIGINT ignored cannot
    trap it, so a timed-out command would go on with the rest of its command line."""
    try:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(
                signal.SIG_UNBLOCK, [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT]
            )
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGQUIT):
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None):
    # Keep the protocol stream private: stray writes to fd 1 by anything (a child that inherits
    # it, a library print) go to stderr instead of corrupting frames.
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _grow_pipe(out_fd)
    _reset_inherited_signals()
    if os.getpid() == 1:
        # Python's SIGINT handler would let any command end the sandbox with `kill -INT 1`
        # (KeyboardInterrupt in the reader). As init, a signal without a handler is dropped.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    agent = Agent(in_fd, out_fd)
    # As PID 1 (the container's init) orphans are ours to reap, and `kill -9 -1` cannot reach
    # us: the kernel drops every signal to init that init has no handler for.
    threading.Thread(
        target=watchdog_forever,
        args=(agent.guard, os.getpid() == 1),
        name="agentic-watchdog",
        daemon=True,
    ).start()
    args = sys.argv if argv is None else argv
    try:
        if "--listen" in args:
            serve_tcp(agent, args[args.index("--listen") + 1], out_fd)
        else:
            if "--connect" in args:
                connect_direct(agent, args[args.index("--connect") + 1])
            agent.serve()
    finally:
        agent.close()
    return 0


def serve_tcp(agent, address, announce_fd):
    """Direct TCP mode (clusters where the API server must not carry the traffic).

    Bootstrapped over the exec stream as usual; then reads a per-sandbox secret (one line) from
    that same stream, says ``listening`` there and serves TCP connections that prove they hold
    the secret (``tcp_handshake``); any other connection is dropped without a byte of RPC.
    Handshakes run on the accept thread, so a stranger cannot hold the port while the host is
    connected; authenticated connections are served one at a time. Sessions and the
    at-most-once request ids survive a reconnect.
    """
    import socket

    secret = _read_secret_line(agent.in_fd)
    host, _, port = address.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host.strip("[]") or "0.0.0.0", int(port)))
    server.listen(16)
    os.write(announce_fd, (json_dumps({"id": None, "listening": address}) + "\n").encode())
    ready = queue.Queue()

    def accept_forever():
        while True:
            conn, _peer = server.accept()
            if tcp_handshake(conn, secret):
                ready.put(conn)
            else:
                conn.close()

    threading.Thread(target=accept_forever, name="agentic-accept", daemon=True).start()
    while True:
        conn = ready.get()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        agent.in_fd = os.dup(conn.fileno())
        agent.out_fd = conn.fileno()
        try:
            agent.serve()
        finally:
            conn.close()


def connect_direct(agent, path):
    """Direct unix-socket mode (Docker): the host listens at ``path`` (a read-only bind mount of
    a host directory); we read the per-sandbox secret from the stream we were started on,
    connect, send the secret, then say on that stream whether it worked and serve the socket
    (or, when it did not, the stream itself, as without ``--connect``).

    Done before any command exists, so none can see the secret or race us to the socket; the
    socket is close-on-exec, and ``harden()`` runs before the first command.
    """
    import socket

    secret = _read_secret_line(agent.in_fd)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        conn.sendall(secret + b"\n")
    except OSError as exc:
        conn.close()
        reason = "%s: %s" % (path, exc.strerror or exc)
        agent.send({"id": None, "direct": False, "reason": reason})
        return
    agent.send({"id": None, "direct": True})
    agent.channel = conn  # referenced while served: its collection would close the fd
    agent.in_fd = os.dup(conn.fileno())  # non-inheritable, like every fd Python makes
    agent.out_fd = conn.fileno()


def _read_secret_line(fd):
    """The secret the host sends right after the agent's source, on the exec stream's stdin."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 256:
        data = os.read(fd, 1)  # byte by byte: nothing after the line may be consumed
        if not data:
            break
        line += data
    secret = line.strip()
    if len(secret) < 32:
        sys.stderr.write("agentic-rollout agent: --listen needs a secret line on stdin\n")
        sys.exit(5)
    return secret


def tcp_handshake(conn, secret, timeout=5.0):
    """Challenge-response: we send a fresh nonce, the peer must answer
    HMAC-SHA256(secret, nonce) within ``timeout``. True when it did (then we say ok)."""
    import hashlib
    import hmac

    nonce = os.urandom(16).hex()
    try:
        conn.settimeout(timeout)
        conn.sendall((json_dumps({"id": None, "challenge": nonce}) + "\n").encode())
        line = b""
        while not line.endswith(b"\n") and len(line) < 512:
            data = conn.recv(1)  # byte by byte: RPC frames after the line stay in the socket
            if not data:
                return False
            line += data
        try:
            proof = json_loads(line.decode("ascii")).get("auth")
        except (ValueError, UnicodeDecodeError, AttributeError):
            return False
        expected = hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()
        if not isinstance(proof, str) or not hmac.compare_digest(proof, expected):
            return False
        conn.sendall((json_dumps({"id": None, "auth": "ok"}) + "\n").encode())
        conn.settimeout(None)
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# fork: what changed in the filesystem since the sandbox started (fs.diff), and putting it into
# another sandbox of the same image (fs.apply). Host side: orchestrator/sandbox/fork.py.

#: never walked nor written: the kernel's trees and the host's channel mount
FS_SKIP = ("/proc", "/sys", "/dev", "/.agentic-rollout")
#: seconds before the start that still count as "changed": dockerd writes the container's init
#: files a moment before it starts it, and a file's ctime comes from the kernel's coarse clock
#: (up to a tick behind ``time.time()``). An entry in the margin is carried: too much, never
#: too little.
FS_MARGIN = 2.0
FS_MAX_ENTRIES = 1000000
#: a member path longer than this is refused (PATH_MAX)
FS_MAX_PATH = 4096
#: pax header of the archive's first member: JSON {changed directory: [its entry names]}
FS_DIRS_HEADER = "AGENTIC.dirs"
_FS_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _unescape_mount(field):
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out += field[i : i + 1]
            i += 1
    return os.fsdecode(bytes(out))


def _fs_excluded(include, private):
    """Paths whose trees are neither walked nor written: FS_SKIP, the agent's own directory,
    and every mount point but ``/``, writable tmpfs mounts and writable mounts under
    ``include`` (the work directory: a volume on a read-only root, an emptyDir in a pod).
    A host bind mount (a channel, ``/etc/hosts``, a shared host path) is never touched."""
    excluded = set(FS_SKIP)
    excluded.add(private)
    carried = []
    root_writable = True
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-")
            point = _unescape_mount(fields[4])
            writable = b"rw" in fields[5].split(b",")
            fstype = fields[sep + 1]
        except (ValueError, IndexError):
            continue
        if point == "/":
            root_writable = writable
            continue
        if writable and (
            fstype == b"tmpfs" or any(point == i or point.startswith(i + "/") for i in include)
        ):
            carried.append(point)
        else:
            excluded.add(point)
    carried = [p for p in carried if not any(p == x or p.startswith(x + "/") for x in excluded)]
    # a read-only root cannot change: only the carried mounts are walked
    return excluded, (["/"] if root_writable else carried)


def _fs_scope(agent, params):
    """(excluded trees, roots to walk, max_bytes) of an fs.diff / fs.apply request."""
    include = _param(params, "include", list, [])
    max_bytes = _param(params, "max_bytes", int, required=True)
    if not all(isinstance(i, str) and i.startswith("/") for i in include):
        raise invalid_params("parameter 'include' must be a list of absolute paths")
    excluded, roots = _fs_excluded([os.path.normpath(i) for i in include], agent.root)
    return excluded, roots, max_bytes


def _pid1_start():
    """Wall-clock start of the container's first process (the pod's command where the agent
    was started later over exec), or None."""
    try:
        with open("/proc/1/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith(b"btime "))
        return btime + ticks / float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _join(d, name):
    return ("" if d == "/" else d) + "/" + name


def fs_changes(since_ns, excluded, max_bytes, roots=("/",)):
    """(entries [(path, lstat)], {changed dir: [names]}, bytes): every entry whose ctime is at
    or after ``since_ns`` (a content, mode, owner or link change; ctime cannot be set by a
    user), parents before children. Symlinks are never followed, excluded trees never
    entered. Over ``max_bytes`` of regular files (apparent size) raises ArchiveTooLarge."""
    entries = []
    dirs = {}
    total = 0
    changed_dirs = set()
    stack = []
    for top in sorted(set(roots), reverse=True):  # stack: popped shallowest first
        try:
            st = os.lstat(top)
        except OSError:
            continue
        if st.st_ctime_ns >= since_ns:
            entries.append((top, st))
            changed_dirs.add(top)
        stack.append(top)
    while stack:
        d = stack.pop()
        names = []
        try:
            it = os.scandir(d)
        except OSError:
            continue  # vanished or unreadable meanwhile
        with it:
            for e in it:
                names.append(e.name)
                p = _join(d, e.name)
                if p in excluded:
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                is_dir = stat_mod.S_ISDIR(st.st_mode)
                if is_dir:
                    stack.append(p)
                if st.st_ctime_ns < since_ns:
                    continue
                if is_dir:
                    changed_dirs.add(p)
                elif stat_mod.S_ISREG(st.st_mode):
                    total += st.st_size
                    if total > max_bytes:
                        raise RpcError(
                            -32001,
                            "ArchiveTooLarge",
                            "the files changed since the start hold more than %s (passed it at "
                            "%s after %d entries, %s)"
                            % (_size(max_bytes), _size(total), len(entries), p),
                            {"path": p, "bytes": total, "limit": max_bytes},
                        )
                entries.append((p, st))
                if len(entries) > FS_MAX_ENTRIES:
                    raise RpcError(
                        -32001,
                        "ArchiveTooLarge",
                        "more than %d entries changed since the start" % FS_MAX_ENTRIES,
                    )
        if d in changed_dirs:
            dirs[d] = names
    return entries, dirs, total


class _ExactReader(object):
    """Exactly ``size`` bytes of an open file for tarfile: a file that shrank meanwhile is
    padded with zeros, one that grew is cut (the archive's header said ``size``)."""

    def __init__(self, fd, size):
        self.fd = fd
        self.left = size

    def read(self, n=-1):
        if n < 0 or n > self.left:
            n = self.left
        if n <= 0:
            return b""
        data = os.read(self.fd, min(n, 1 << 20)) if self.fd is not None else b""
        if not data:
            data = bytes(min(n, 1 << 20))
        self.left -= len(data)
        return data


def fs_diff(agent, rid, params):
    import json
    import tarfile

    excluded, roots, max_bytes = _fs_scope(agent, params)
    since = _param(params, "since", (int, float), None)
    if since is None:
        first = _pid1_start()
        since = min(agent.started, first if first is not None else agent.started) - FS_MARGIN
    since_ns = int(since * 1e9)
    t0 = time.time()
    entries, dirs, total = fs_changes(since_ns, excluded, max_bytes, roots)
    walked = time.time()
    header = json.dumps(dirs, separators=(",", ":"))
    sink = _ChunkSink(agent, rid)
    skipped = []
    links = {}
    sent = 0
    with tarfile.open(
        fileobj=sink,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tar:
        first = True
        for path, st in entries:
            entry = _diff_entry(path, st, links)
            if entry is None:
                skipped.append(path)
                continue
            info, fd = entry
            if first:
                info.pax_headers[FS_DIRS_HEADER] = header
            try:
                tar.addfile(info, _ExactReader(fd, info.size) if fd is not None else None)
            finally:
                if fd is not None:
                    os.close(fd)
            sent += info.size
            first = False
        if first:  # nothing changed: the header still travels, on the root's entry
            info = tarfile.TarInfo(".")
            info.type = tarfile.DIRTYPE
            info.mode = stat_mod.S_IMODE(os.lstat("/").st_mode)
            info.pax_headers = {FS_DIRS_HEADER: header, "AGENTIC.only-header": "1"}
            tar.addfile(info)
    sink.flush()
    return {
        "entries": len(entries) - len(skipped),
        "bytes": sent,
        "dirs": len(dirs),
        "skipped": skipped[:100],
        "skipped_count": len(skipped),
        "since": since,
        "stream_bytes": sink.total,
        "walk_s": round(walked - t0, 4),
        "stream_s": round(time.time() - walked, 4),
    }


def _read_for_search(path, max_file, skipped):
    """A file's bytes for content search; None for one over ``max_file``, unreadable, or not
    a regular file (a FIFO blocks, a device never ends: those are added to ``skipped``)."""
    try:
        with open_regular(path, os.O_RDONLY) as f:
            if os.fstat(f.fileno()).st_size > max_file:
                return None
            return f.read()
    except RpcError as exc:
        if exc.type == "NotARegularFile":
            skipped.append({"path": path, "kind": exc.data["kind"]})
        return None
    except OSError:
        return None


def _pump_exec(proc, out, err, deadline, cancel):
    """Read an exec'd process's stdout and stderr into ``out`` and ``err`` until both end; at
    the deadline or on cancel, kill its process tree and keep what it had written. Returns
    (timed_out, cancelled)."""
    fds = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    while fds:
        if cancel.is_set() or time.monotonic() >= deadline:
            cancelled = cancel.is_set()
            kill_tree(proc.pid, frozenset(), {os.getpgid(0)}, sid=proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            for fd, capture in fds.items():
                capture.feed(_drain(fd))
            return not cancelled, cancelled
        ready, _, _ = select.select(
            list(fds), [], [], min(0.25, max(0.0, deadline - time.monotonic()))
        )
        for fd in ready:
            data = os.read(fd, 1 << 20)
            if data:
                fds[fd].feed(data)
            else:
                del fds[fd]
    return False, False


def _diff_entry(path, st, links):
    """(tar header, open file or None) of one changed path; None for what a fork does not
    carry (devices, sockets) and for a path that vanished or changed kind meanwhile. A regular
    file seen before under another name (``links``: (dev, inode) -> name) is a hard link."""
    import tarfile

    info = tarfile.TarInfo(path.lstrip("/") or ".")
    info.mode = stat_mod.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = st.st_mtime
    info.uname = info.gname = ""
    # to the nanosecond (the ustar field holds whole seconds): make and friends compare
    info.pax_headers = {"mtime": "%d.%09d" % divmod(st.st_mtime_ns, 10**9)}
    mode = st.st_mode
    fd = None
    try:
        if stat_mod.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat_mod.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
        elif stat_mod.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        elif stat_mod.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                info.type = tarfile.LNKTYPE
                info.linkname = links[key]
            else:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "no longer a regular file")
                links[key] = info.name
                info.size = st.st_size
        else:  # devices and sockets: a fork is files
            return None
    except OSError:
        if fd is not None:
            os.close(fd)
        return None
    return info, fd


def _unsafe(message):
    return RpcError(-32602, "UnsafeArchive", message)


class _Applier(object):
    """Writes fs.diff members under ``/`` without ever following a symlink: every path is
    opened one component at a time (O_NOFOLLOW) from ``/``; nothing is created, replaced or
    removed in an excluded tree (the kernel's, the agent's, a mount not carried); a removal
    never crosses into another filesystem. What a crafted stream can do is what a command in
    this sandbox could do to its own files."""

    def __init__(self, excluded, max_bytes):
        self.excluded = excluded
        self.max_bytes = max_bytes
        self.total = 0
        self.root = os.open("/", _FS_DIR_FLAGS)
        self.root_dev = os.fstat(self.root).st_dev
        self.cached = None  # (directory path, fd): members come grouped by directory
        self.written = set()  # regular files made here: the only hard link sources
        self.dirs = []  # (path, member): attributes set at the end, deepest first
        self.skipped = 0
        self.count = 0
        self.owner = (os.geteuid(), os.getegid())
        self.owners_not_kept = 0

    def chown(self, m, target, dfd=None):
        """The source's owner, where this sandbox may give it: without CAP_CHOWN (sandboxes
        drop every capability) a file stays ours, as it would have been in the parent."""
        if (m.uid, m.gid) == self.owner:
            return
        try:
            if dfd is None:
                os.fchown(target, m.uid, m.gid)
            else:
                os.chown(target, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
        except PermissionError:
            self.owners_not_kept += 1

    def close(self):
        self._uncache()
        os.close(self.root)

    def _uncache(self):
        if self.cached is not None:
            os.close(self.cached[1])
            self.cached = None

    def _check(self, path):
        p = path
        while p != "/":
            if p in self.excluded:
                raise _unsafe(
                    "archive member %r is inside %s, which a fork never writes" % (path, p)
                )
            p = os.path.dirname(p)

    @staticmethod
    def path_of(name):
        if name in (".", "./", ""):
            return "/"
        if len(name) > FS_MAX_PATH or "\0" in name:
            raise _unsafe("archive member name is too long or holds NUL")
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise _unsafe("archive member %r is not a plain relative path" % (name,))
        return "/" + name

    def open_dir(self, path):
        """An fd of directory ``path`` (the caller must not close it: cached)."""
        if self.cached is not None and self.cached[0] == path:
            return self.cached[1]
        self._uncache()
        fd = os.dup(self.root)
        try:
            for part in path.strip("/").split("/") if path != "/" else []:
                nfd = os.open(part, _FS_DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _unsafe(
                    "archive member's directory %s is a symlink or not a directory here" % path
                )
            raise
        self.cached = (path, fd)
        return fd

    def _lstat(self, dfd, name):
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def remove(self, dfd, name, path, st):
        if path in self.excluded:
            return False
        if stat_mod.S_ISDIR(st.st_mode):
            sub = os.open(name, _FS_DIR_FLAGS, dir_fd=dfd)
            try:
                dev = os.fstat(sub).st_dev
                if dev != st.st_dev:
                    return False
                empty = True
                for e in os.scandir(sub):
                    est = os.stat(e.name, dir_fd=sub, follow_symlinks=False)
                    if est.st_dev != dev:
                        empty = False
                        continue
                    if not self.remove(sub, e.name, _join(path, e.name), est):
                        empty = False
            finally:
                os.close(sub)
            if empty:
                try:
                    os.rmdir(name, dir_fd=dfd)
                except OSError as exc:
                    if exc.errno != errno.EBUSY:  # a mount point: stays
                        raise
                    return False
            return empty
        os.unlink(name, dir_fd=dfd)
        return True

    def whiteout(self, dirs):
        """Remove what each changed directory of the source no longer holds."""
        for d in sorted(dirs):
            names = dirs[d]
            if not isinstance(d, str) or not isinstance(names, list):
                raise _unsafe("malformed directory list in the archive header")
            path = self.path_of(d.lstrip("/") or ".")
            keep = set(names)
            try:
                self._check(path)
                dfd = self.open_dir(path)
            except (FileNotFoundError, RpcError):
                continue  # made by the members, or not ours to clean
            present = [e.name for e in os.scandir(dfd)]
            for name in present:
                if name in keep:
                    continue
                st = self._lstat(dfd, name)
                if st is not None:
                    self.remove(dfd, name, _join(path, name), st)

    def member(self, tar, m):
        path = self.path_of(m.name)
        self.count += 1
        if self.count > FS_MAX_ENTRIES:
            raise _unsafe("archive holds more than %d members" % FS_MAX_ENTRIES)
        # devices are not carried (a fork is files; tarfile's isdev() counts FIFOs too)
        if not (m.isdir() or m.isreg() or m.issym() or m.islnk() or m.isfifo()):
            self.skipped += 1
            return
        if path == "/":
            if m.isdir():
                self.dirs.append((path, m))
            return
        self._check(path)
        parent, name = os.path.split(path)
        dfd = self.open_dir(parent)
        st = self._lstat(dfd, name)
        if m.isdir():
            if st is not None and not stat_mod.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dfd)
                st = None
            if st is None:
                os.mkdir(name, 0o700, dir_fd=dfd)
            self.dirs.append((path, m))
            return
        if st is not None:
            if not self.remove(dfd, name, path, st):
                raise _unsafe("cannot replace %s: it holds a mount point" % path)
            dfd = self.open_dir(parent)
        if m.isreg():
            self.extract_file(tar, m, name, dfd)
            self.written.add(path)
            return
        if m.islnk():
            self.hard_link(m, name, parent)
            return
        if m.issym():
            os.symlink(m.linkname, name, dir_fd=dfd)
        else:
            os.mkfifo(name, m.mode & 0o7777, dir_fd=dfd)
            os.chmod(name, m.mode & 0o7777, dir_fd=dfd)
        self.chown(m, name, dfd)
        ns = int(m.mtime * 1e9)
        os.utime(name, ns=(ns, ns), dir_fd=dfd, follow_symlinks=False)

    def extract_file(self, tar, m, name, dfd):
        """A regular file of the archive, created (never opened through a link) in ``dfd``;
        a 1 MiB block of zeros becomes a hole."""
        self.total += m.size
        if self.total > self.max_bytes:
            raise RpcError(
                -32001,
                "ArchiveTooLarge",
                "archive passed max_bytes (%s)" % _size(self.max_bytes),
            )
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
            0o600,
            dir_fd=dfd,
        )
        try:
            src = tar.extractfile(m)
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                if block.count(0) == len(block):  # a hole stays a hole
                    os.lseek(fd, len(block), os.SEEK_CUR)
                else:
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
            os.ftruncate(fd, m.size)
            self.chown(m, fd)
            os.fchmod(fd, m.mode & 0o7777)
            os.utime(fd, ns=(int(m.mtime * 1e9), int(m.mtime * 1e9)))
        finally:
            os.close(fd)

    def hard_link(self, m, name, parent):
        """A hard link, only to a file this archive wrote (never to one already there)."""
        source = self.path_of(m.linkname)
        if source not in self.written:
            raise _unsafe(
                "hard link %r points at %r, not a file of this archive" % (m.name, m.linkname)
            )
        sparent, sname = os.path.split(source)
        sfd = os.dup(self.open_dir(sparent))
        try:
            dfd = self.open_dir(parent)
            os.link(sname, name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(sfd)

    def finish(self):
        """Directory attributes, deepest first (their contents changed their mtimes)."""
        for path, m in reversed(self.dirs):
            self._uncache()
            try:
                fd = self.open_dir(path)
            except (OSError, RpcError):
                continue
            self.chown(m, fd)
            os.fchmod(fd, m.mode & 0o7777)
            ns = int(m.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))


def fs_apply(agent, rid, params, source):
    import json
    import tarfile

    excluded, _roots, max_bytes = _fs_scope(agent, params)
    applier = _Applier(excluded, max_bytes)
    try:
        with tarfile.open(
            fileobj=source,
            mode="r|",
            encoding="utf-8",
            errors="surrogateescape",
            bufsize=1 << 20,
        ) as tar:
            m = tar.next()
            if m is None:
                raise RpcError(-32602, "InvalidArchive", "the fork archive is empty")
            try:
                dirs = json.loads(m.pax_headers.get(FS_DIRS_HEADER, "{}"))
            except ValueError:
                raise _unsafe("the archive's directory list is not JSON")
            if not isinstance(dirs, dict):
                raise _unsafe("the archive's directory list is not an object")
            applier.whiteout(dirs)
            while m is not None:
                if m.pax_headers.get("AGENTIC.only-header") != "1":
                    applier.member(tar, m)
                m = tar.next()
        applier.finish()
    except tarfile.TarError as exc:
        raise RpcError(-32602, "InvalidArchive", "fork archive is not a valid tar stream: %s" % exc)
    finally:
        applier.close()
    return {
        "members": applier.count,
        "bytes": applier.total,
        "skipped": applier.skipped,
        "owners_not_kept": applier.owners_not_kept,
    }


if __name__ == "__main__":
    sys.exit(main())
