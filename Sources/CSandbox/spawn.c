#define _GNU_SOURCE
#include "csandbox.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

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

/// Marks every descriptor from `first` up close-on-exec, except `keep` (already close-on-exec,
/// but it must stay open until the exec). close_range(CLOSE_RANGE_CLOEXEC) needs Linux 5.11; on
/// an older kernel each descriptor up to the limit is closed one by one. Returns 0 or an errno.
static int close_rest(int first, int keep) {
    if (syscall(SYS_close_range, (unsigned)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return 0;
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return errno;
    rlim_t top = lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > (1 << 20) ? (1 << 20) : lim.rlim_cur;
    for (rlim_t fd = (rlim_t)first; fd < top; fd++) if ((int)fd != keep) close((int)fd);
    return 0;
}

struct spawn_job {
    const char *path;
    char *const *argv;
    char *const *envp;
    const int *fds;
    const int *targets;
    int nfds;
    char *const *cgroup_procs;
    int ncgroups;
    pid_t result;
    int pidfd;
    int done;
};

static pid_t spawn_here(struct spawn_job *j) {
    int report[2];
    j->pidfd = -1;
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    // vfork: the child borrows the parent's memory until it execs, so the spawn costs no page
    // table copy however large the node process is. The child below only makes system calls
    // and never returns from this function.
    pid_t parent = getpid();
    pid_t pid = vfork();
    if (pid < 0) { int e = errno; close(report[0]); close(report[1]); return -e; }
    if (pid == 0) {
        int err = 0;
        // The report pipe moves above every target first: a target may have its number, and
        // the descriptors closed below may include it. Close-on-exec: after a successful exec
        // the parent reads EOF.
        int rep = fcntl(report[1], F_DUPFD_CLOEXEC, 64);
        if (rep < 0) { err = errno; rep = report[1]; goto fail; }
        pid_t me = getpid();
        for (int i = 0; i < j->ncgroups; i++) {
            // A task outside its cgroup would run without its limits: a failed join fails the
            // spawn, and says it was the join (and which file) so the caller refuses the task.
            int fd = open(j->cgroup_procs[i], O_WRONLY | O_CLOEXEC);
            if (fd < 0) { err = STARLING_SPAWN_CGROUP_FAILED | ((i & 0xff) << 16) | errno; goto fail; }
            err = write_pid(fd, me);
            close(fd);
            if (err != 0) { err = STARLING_SPAWN_CGROUP_FAILED | ((i & 0xff) << 16) | err; goto fail; }
        }
        setpgid(0, 0);
        // The "parent" of PDEATHSIG is the thread that forked: this spawner thread, which
        // lives as long as the process.
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) { err = errno; goto fail; }
        if (getppid() != parent) { err = ESRCH; goto fail; }  // the parent already died
        // Handlers back to their defaults *before* signals are unmasked: this child shares the
        // parent's memory (vfork), and a parent's handler must never run in it.
        for (int s = 1; s < 32; s++) signal(s, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        // Move sources out of the way of targets first, then place them.
        int moved[16];
        if (j->nfds > 16) { err = E2BIG; goto fail; }
        for (int i = 0; i < j->nfds; i++) {
            moved[i] = fcntl(j->fds[i], F_DUPFD_CLOEXEC, 64);
            if (moved[i] < 0) { err = errno; goto fail; }
        }
        for (int i = 0; i < j->nfds; i++) {
            if (dup2(moved[i], j->targets[i]) < 0) { err = errno; goto fail; }
        }
        int highest = 2;
        for (int i = 0; i < j->nfds; i++) if (j->targets[i] > highest) highest = j->targets[i];
        for (int fd = 3; fd <= highest; fd++) {
            int keep = fd == rep;
            for (int i = 0; i < j->nfds; i++) if (j->targets[i] == fd) keep = 1;
            if (!keep) close(fd);
        }
        err = close_rest(highest + 1, rep);
        if (err != 0) goto fail;
        execve(j->path, j->argv, j->envp);
        err = errno;
    fail:
        (void)!write(rep, &err, sizeof err);
        _exit(127);
    }
    close(report[1]);
    int err = 0;
    ssize_t n;
    do { n = read(report[0], &err, sizeof err); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof err && err != 0) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}  // it exits 127 at once: reap it
        return -err;
    }
    // Not reaped yet (only our caller waits for it), so the number is still this child's.
    long fd = syscall(SYS_pidfd_open, pid, 0);
    j->pidfd = fd < 0 ? -1 : (int)fd;
    return pid;
}

// Every spawn runs on one thread that lives as long as the process. PR_SET_PDEATHSIG fires when
// the *thread* that forked exits, so a spawn from a short-lived thread (a Dispatch worker, a
// Swift task's thread) would kill its sandbox as soon as that thread ended.
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;   // one caller at a time
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;  // guards `job` and `done`
static pthread_cond_t slot_changed = PTHREAD_COND_INITIALIZER;
static struct spawn_job *job;
static pthread_once_t spawner_once = PTHREAD_ONCE_INIT;
static int spawner_error;

static void *spawner_main(void *unused) {
    (void)unused;
    pthread_mutex_lock(&slot_lock);
    for (;;) {
        while (job == NULL || job->done) pthread_cond_wait(&slot_changed, &slot_lock);
        struct spawn_job *j = job;
        pthread_mutex_unlock(&slot_lock);
        j->result = spawn_here(j);
        pthread_mutex_lock(&slot_lock);
        j->done = 1;
        pthread_cond_broadcast(&slot_changed);
    }
    return NULL;
}

static void start_spawner(void) {
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    // The spawner takes no signals: they belong to the threads that handle them.
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    spawner_error = pthread_create(&thread, &attr, spawner_main, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (spawner_error == 0) pthread_setname_np(thread, "starling-spawn");
}

pid_t starling_spawn(const char *path, char *const argv[], char *const envp[],
                     const int *fds, const int *targets, int nfds,
                     char *const cgroup_procs[], int ncgroups, int *pidfd) {
    *pidfd = -1;
    pthread_once(&spawner_once, start_spawner);
    if (spawner_error != 0) return -spawner_error;
    struct spawn_job j = {path, argv, envp, fds, targets, nfds, cgroup_procs, ncgroups, 0, -1, 0};
    pthread_mutex_lock(&job_lock);
    pthread_mutex_lock(&slot_lock);
    job = &j;
    pthread_cond_broadcast(&slot_changed);
    while (!j.done) pthread_cond_wait(&slot_changed, &slot_lock);
    job = NULL;
    pthread_mutex_unlock(&slot_lock);
    pthread_mutex_unlock(&job_lock);
    *pidfd = j.pidfd;
    return j.result;
}

int starling_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }

int starling_pidfd_open(pid_t pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : (int)fd;
}

int starling_pidfd_send_signal(int pidfd, int sig) {
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
}

int starling_memfd_holding(const void *bytes, size_t length) {
    int fd = memfd_create("starling-args", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    size_t at = 0;
    while (at < length) {
        ssize_t n = write(fd, (const char *)bytes + at, length - at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { int e = n < 0 ? errno : EIO; close(fd); return -e; }
        at += (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) != 0) { int e = errno; close(fd); return -e; }
    return fd;
}

int starling_socketpair_cloexec(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : -errno;
}
