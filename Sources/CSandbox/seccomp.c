#define _GNU_SOURCE
#include "csandbox.h"
#include <errno.h>
#include <seccomp.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

// The filter is an allow-list modelled on Docker's default profile: a system call that is
// neither allowed below nor denied by name fails with ENOSYS, so that a program (or libc) that
// tries a call newer than this list falls back as on an older kernel, and no new kernel
// interface reaches a task before someone has looked at it.
//
// What ordinary programs use: files, memory, processes and threads, signals, time, sockets
// (the network namespace decides what they reach), polling, IPC, scheduling hints.
static const char *const allowed[] = {
    // Files and directories.
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
    "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "_llseek", "dup", "dup2", "dup3",
    "stat", "fstat", "lstat", "newfstatat", "statx", "stat64", "fstat64", "lstat64", "fstatat64", "statfs", "fstatfs",
    "statfs64", "fstatfs64", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents", "getdents64",
    "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat",
    "unlink", "unlinkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown",
    "lchown", "fchownat", "chown32", "fchown32", "lchown32", "umask", "truncate", "ftruncate", "truncate64",
    "ftruncate64", "fallocate", "fadvise64", "fadvise64_64", "arm_fadvise64_64", "readahead", "fsync", "fdatasync",
    "sync", "syncfs", "sync_file_range", "sync_file_range2", "flock", "fcntl", "fcntl64", "ioctl", "mknod", "mknodat",
    "utime", "utimes", "utimensat", "utimensat_time64", "futimesat", "getxattr", "lgetxattr", "fgetxattr", "setxattr",
    "lsetxattr", "fsetxattr", "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
    "sendfile", "sendfile64", "copy_file_range", "splice", "tee", "vmsplice", "inotify_init", "inotify_init1",
    "inotify_add_watch", "inotify_rm_watch", "fanotify_mark", "memfd_create", "cachestat",
    // Memory.
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock", "mlock2",
    "munlock", "mlockall", "munlockall", "remap_file_pages", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "membarrier", "map_shadow_stack",
    // Processes, threads, identity, limits (clone is allowed below, without namespace flags).
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "waitpid", "getpid", "getppid",
    "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "getuid", "geteuid", "getgid", "getegid",
    "getresuid", "getresgid", "getgroups", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
    "setgroups", "setfsuid", "setfsgid", "getuid32", "geteuid32", "getgid32", "getegid32", "getresuid32",
    "getresgid32", "getgroups32", "setuid32", "setgid32", "setreuid32", "setregid32", "setresuid32", "setresgid32",
    "setgroups32", "setfsuid32", "setfsgid32", "capget", "capset", "prctl", "arch_prctl", "set_tid_address",
    "set_robust_list", "get_robust_list", "rseq", "futex", "futex_time64", "futex_waitv", "futex_wake",
    "futex_wait", "futex_requeue", "set_thread_area", "get_thread_area", "modify_ldt", "getrlimit", "setrlimit",
    "prlimit64", "ugetrlimit", "getrusage", "times", "getpriority", "setpriority", "sched_yield",
    "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam", "sched_getscheduler",
    "sched_setscheduler", "sched_getattr", "sched_setattr", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "ioprio_get", "ioprio_set", "getcpu", "uname",
    "sysinfo", "getrandom", "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    "pidfd_open", "pidfd_send_signal", "process_mrelease", "restart_syscall", "uretprobe",
    // Signals.
    "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack",
    "signalfd", "signalfd4", "sigaction", "sigprocmask", "sigreturn", "sigsuspend", "sigpending", "pause", "alarm",
    // Time.
    "nanosleep", "clock_nanosleep", "clock_nanosleep_time64", "clock_gettime", "clock_gettime64", "clock_getres",
    "clock_getres_time64", "gettimeofday", "time", "getitimer", "setitimer", "timer_create", "timer_delete",
    "timer_settime", "timer_settime64", "timer_gettime", "timer_gettime64", "timer_getoverrun", "timerfd_create",
    "timerfd_settime", "timerfd_settime64", "timerfd_gettime", "timerfd_gettime64",
    // Polling and events.
    "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6", "pselect6_time64", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "pipe", "pipe2",
    // Sockets (socket itself is allowed below, but for AF_VSOCK).
    "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "recvmmsg_time64", "send", "recv", "shutdown",
    "setsockopt", "getsockopt", "socketcall",
    // System V and POSIX IPC (the sandbox has its own IPC namespace), asynchronous I/O (not io_uring).
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semtimedop_time64", "semctl", "msgget",
    "msgsnd", "msgrcv", "msgctl", "ipc", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedsend_time64",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_notify", "mq_getsetattr", "io_setup", "io_destroy",
    "io_submit", "io_cancel", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
};

// Denied by name with EPERM, each for its reason: Docker's default deny set (what its profile
// leaves out, or allows only with a capability a task never holds here). Anything else not
// allowed above gets ENOSYS.
static const char *const denied[] = {
    // Reading or steering other processes: debuggers, memory of others, their descriptors.
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
    // Mounts, the new mount API, root changes, file handles that bypass path checks.
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "open_by_handle_at", "name_to_handle_at",
    // Namespaces: no nested sandbox, no user namespace with its capabilities (clone is below).
    "setns", "unshare",
    // Code into the kernel, kernel state, the keyring, raw counters, io_uring (a path around
    // seccomp itself: its operations are not system calls), userfaultfd (exploit timing).
    "kexec_load", "kexec_file_load", "bpf", "init_module", "finit_module", "delete_module", "create_module",
    "get_kernel_syms", "query_module", "keyctl", "add_key", "request_key", "perf_event_open", "lookup_dcookie",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "fanotify_init", "syslog",
    // The machine: power, swap, clocks, quotas, accounting, I/O ports, hostname, the tty.
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "stime", "clock_settime", "clock_adjtime",
    "adjtimex", "quotactl", "quotactl_fd", "iopl", "ioperm", "vhangup", "sethostname", "setdomainname",
    // NUMA placement (needs CAP_SYS_NICE in Docker's profile).
    "mbind", "migrate_pages", "move_pages", "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node",
    // Obsolete or never-implemented calls: attack surface with no user.
    "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "afs_syscall", "tuxcall",
    "security", "putpmsg", "getpmsg", "bdflush",
};

/// clone() flags that create a namespace. A task may start processes and threads, never a
/// namespace: a user namespace would hand it CAP_NET_ADMIN over a network namespace of its own,
/// the usual path to netfilter and netlink kernel bugs. CLONE_NEWTIME (0x80) shares its bit with
/// the exit signal in clone(), so it is refused by sending clone3 to ENOSYS instead.
static const unsigned long namespace_flags[] = {
    0x00020000UL /* CLONE_NEWNS */, 0x02000000UL /* CLONE_NEWCGROUP */, 0x04000000UL /* CLONE_NEWUTS */,
    0x08000000UL /* CLONE_NEWIPC */, 0x10000000UL /* CLONE_NEWUSER */, 0x20000000UL /* CLONE_NEWPID */,
    0x40000000UL /* CLONE_NEWNET */,
};

int starling_seccomp_denied_count(void) { return (int)(sizeof denied / sizeof denied[0]); }

int starling_seccomp_allowed_count(void) { return (int)(sizeof allowed / sizeof allowed[0]); }

// The BPF program is built once per process; each sandbox gets its own memfd copy of it.
static unsigned char *program;
static size_t program_len;
static int program_error;
static pthread_once_t program_once = PTHREAD_ONCE_INIT;

static int build_filter_fd(void);

static void build_program(void) {
    int fd = build_filter_fd();
    if (fd < 0) { program_error = fd; return; }
    off_t len = lseek(fd, 0, SEEK_END);
    lseek(fd, 0, SEEK_SET);
    program = malloc((size_t)len);
    if (!program || read(fd, program, (size_t)len) != len) { program_error = -EIO; close(fd); return; }
    program_len = (size_t)len;
    close(fd);
}

int starling_seccomp_filter_fd(void) {
    pthread_once(&program_once, build_program);
    if (program_error) return program_error;
    int fd = memfd_create("starling-seccomp", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    if (write(fd, program, program_len) != (ssize_t)program_len) { int e = errno; close(fd); return -e; }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static int build_filter_fd(void) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(ENOSYS));
    if (!ctx) return -ENOMEM;
    // A binary search over syscall numbers rather than a linear scan of ~350 rules (libseccomp
    // 2.5+; an older one keeps the linear filter, which is slower but the same filter).
    (void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    int rc = 0;
    // Names this architecture (or this libseccomp) does not know are skipped.
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0] && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(allowed[i]);
        if (nr != __NR_SCMP_ERROR) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
    for (size_t i = 0; i < sizeof denied / sizeof denied[0] && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr != __NR_SCMP_ERROR) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    // clone's flags are its first argument on x86_64 and arm64 (the second on s390).
#if defined(__s390x__) || defined(__s390__)
#define CLONE_FLAGS_ARG 1
#else
#define CLONE_FLAGS_ARG 0
#endif
    unsigned long any_namespace = 0;
    for (size_t i = 0; i < sizeof namespace_flags / sizeof namespace_flags[0] && rc == 0; i++) {
        any_namespace |= namespace_flags[i];
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_CMP(CLONE_FLAGS_ARG, SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]));
    }
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                                       SCMP_CMP(CLONE_FLAGS_ARG, SCMP_CMP_MASKED_EQ, any_namespace, 0));
    // socket: any family but AF_VSOCK (40), a channel to the hypervisor host on a VM, which no
    // network namespace covers.
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_NE, 40));
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, 40));
    // clone3 passes its flags in memory, where seccomp cannot look: it is left to the default
    // action, ENOSYS, which makes glibc fall back to clone, whose flags are checked above.
    // (libseccomp refuses a rule whose action is the default one.)
    // personality: the query (0xffffffff) and PER_LINUX (0), the persona every task already
    // has (some runtimes set it explicitly); any other persona (e.g. READ_IMPLIES_EXEC or
    // ADDR_NO_RANDOMIZE) weakens the task's own memory protections and falls to the default
    // action (ENOSYS). libseccomp cannot put two comparisons of one argument in a rule, so no
    // EPERM rule for "neither" is written.
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 1, SCMP_A0(SCMP_CMP_EQ, 0xffffffffUL));
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 1, SCMP_A0(SCMP_CMP_EQ, 0UL));
    if (rc < 0) { seccomp_release(ctx); return rc; }
    int fd = memfd_create("starling-seccomp", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) { int e = errno; seccomp_release(ctx); return -e; }
    rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    if (rc < 0) { close(fd); return rc; }
    lseek(fd, 0, SEEK_SET);
    return fd;
}
