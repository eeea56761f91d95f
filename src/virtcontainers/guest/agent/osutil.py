"""Files, file descriptors and child processes without shutil or subprocess."""

from __future__ import annotations

import errno
import os
import signal

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def exit_status(status: int) -> tuple[int, int | None]:
    """Wait status -> (exit_code, signal); killed by signal N is 128+N."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 128 + sig, sig
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return 255, None


def rmtree(path: str) -> None:
    """shutil.rmtree without importing shutil; never follows symlinks."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            rmtree(entry.path)
        else:
            unlink_quiet(entry.path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        return


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        return


def read_text(path: str, limit: int = 1 << 20) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def find_sysfs_entry(directory: str, attribute: str, value: str) -> str | None:
    """The first entry (by name) of a sysfs class directory whose ``attribute``
    file reads ``value``: the device that the host named so."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    for name in names:
        try:
            if read_text(os.path.join(directory, name, attribute), 256).strip() == value:
                return name
        except OSError:
            continue
    return None


def write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


MACHINE_ID = "/run/machine-id"
"""The root image's /etc/machine-id links here (its /etc is read-only)."""


def write_machine_id() -> None:
    """A machine id of this VM's own (systemd's format: 32 lowercase hex digits)."""
    write_file(MACHINE_ID, os.urandom(16).hex().encode() + b"\n")
    os.chmod(MACHINE_ID, 0o444)


def spawn(argv: list[str], stdio: tuple[int, int, int]) -> int:
    """posix_spawn with stdio on 0-2; Python's ignored signals reset to default."""
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    resets = [signal.SIGPIPE, signal.SIGXFSZ]
    if argv[0].startswith("/"):
        return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsigdef=resets)
    return os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions, setsigdef=resets)


def fork_exec(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    stdio: tuple[int, int, int],
    *,
    terminal: bool,
    ids: tuple[int, int],
) -> int:
    """Start a process in the guest itself (exec_guest): its own session, the
    given stdio (for a terminal, the pty slave becomes its controlling tty).
    A failure before exec comes back as OSError through a close-on-exec pipe.
    """
    if terminal:  # imported before fork(): the child only execs
        import fcntl
        import termios
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe-ish work, then exec
        try:
            os.close(err_r)
            os.setsid()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            if terminal:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.chdir(cwd)
            if ids[1]:
                os.setgroups([])
                os.setgid(ids[1])
            if ids[0]:
                os.setuid(ids[0])
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(err_w, f"{exc.errno}:{exc.strerror}".encode())
        finally:
            os._exit(127)
    os.close(err_w)
    try:
        message = b""
        while chunk := os.read(err_r, 512):
            message += chunk
    finally:
        os.close(err_r)
    if message:
        code, _, text = message.decode(errors="replace").partition(":")
        raise OSError(int(code) if code.isdigit() else errno.EIO, text)
    return pid
