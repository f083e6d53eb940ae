#define _GNU_SOURCE
#include "csandbox.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

// Only async-signal-safe calls between fork and exec: the parent is multithreaded.
// Writes "PID\n" to `fd`; returns 0 or the errno of a failed or short write.
static int write_pid(int fd, pid_t pid) __attribute__((noinline));
static int write_pid(int fd, pid_t pid) {
    char buf[24];
    int n = 0;
    char tmp[24];
    if (pid == 0) tmp[n++] = '0';
    while (pid > 0) { tmp[n++] = (char)('0' + pid % 10); pid /= 10; }
    for (int i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    buf[n++] = '\n';
    ssize_t w = write(fd, buf, (size_t)n);
    return w == n ? 0 : w < 0 ? errno : EIO;
}

pid_t starling_spawn(const char *path, char *const argv[], char *const envp[],
                     const int *fds, const int *targets, int nfds,
                     char *const cgroup_procs[], int ncgroups) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    // vfork: the child borrows the parent's memory until it execs, so the spawn costs no page
    // table copy however large the node process is. The child below only makes system calls
    // and never returns from this function.
    pid_t pid = vfork();
    if (pid < 0) { int e = errno; close(report[0]); close(report[1]); return -e; }
    if (pid == 0) {
        int err = 0;
        pid_t me = getpid();
        for (int i = 0; i < ncgroups; i++) {
            // A group the child cannot join leaves it without limits: fail the spawn, and say
            // it was the join (and which file) so the caller can refuse the task.
            int fd = open(cgroup_procs[i], O_WRONLY | O_CLOEXEC);
            if (fd < 0) { err = STARLING_SPAWN_CGROUP_FAILED | ((i & 0xff) << 16) | errno; goto fail; }
            int werr = write_pid(fd, me);
            close(fd);
            if (werr != 0) { err = STARLING_SPAWN_CGROUP_FAILED | ((i & 0xff) << 16) | werr; goto fail; }
        }
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int s = 1; s < 32; s++) signal(s, SIG_DFL);
        // Move sources out of the way of targets first, then place them.
        int moved[16];
        if (nfds > 16) { err = E2BIG; goto fail; }
        for (int i = 0; i < nfds; i++) {
            moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 64);
            if (moved[i] < 0) { err = errno; goto fail; }
        }
        for (int i = 0; i < nfds; i++) {
            if (dup2(moved[i], targets[i]) < 0) { err = errno; goto fail; }
        }
        int highest = 2;
        for (int i = 0; i < nfds; i++) if (targets[i] > highest) highest = targets[i];
        for (int fd = 3; fd <= highest; fd++) {
            int keep = 0;
            for (int i = 0; i < nfds; i++) if (targets[i] == fd) keep = 1;
            if (!keep) close(fd);
        }
        syscall(SYS_close_range, highest + 1, ~0U, 0);
        // `report` is close-on-exec: after a successful exec the parent reads EOF.
        execve(path, argv, envp);
        err = errno;
    fail:
        (void)!write(report[1], &err, sizeof err);
        _exit(127);
    }
    close(report[1]);
    int err = 0;
    ssize_t n;
    do { n = read(report[0], &err, sizeof err); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof err && err != 0) return -err;  // the child already exited 127
    return pid;
}

int starling_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }

int starling_pidfd_open(pid_t pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : (int)fd;
}

int starling_socketpair_cloexec(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : -errno;
}
