#define _GNU_SOURCE
#include "csandbox.h"
#include <errno.h>
#include <seccomp.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

// Syscalls no task needs, denied with EPERM. The set is Docker's default deny set (what its
// profile leaves out, or allows only with a capability a task never holds here), by class:
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
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < sizeof denied / sizeof denied[0] && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    // clone's flags are its first argument on x86_64 and arm64 (the second on s390).
#if defined(__s390x__) || defined(__s390__)
#define CLONE_FLAGS_ARG 1
#else
#define CLONE_FLAGS_ARG 0
#endif
    for (size_t i = 0; i < sizeof namespace_flags / sizeof namespace_flags[0] && rc == 0; i++) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_CMP(CLONE_FLAGS_ARG, SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]));
    }
    // clone3 passes its flags in memory, where seccomp cannot look: ENOSYS makes glibc fall back
    // to clone, whose flags are checked above.
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    // personality: only the query (0xffffffff); setting a persona (e.g. READ_IMPLIES_EXEC or
    // ADDR_NO_RANDOMIZE) weakens the task's own memory protections.
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
                                       SCMP_A0(SCMP_CMP_NE, 0xffffffffUL));
    if (rc < 0) { seccomp_release(ctx); return rc; }
    int fd = memfd_create("starling-seccomp", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) { int e = errno; seccomp_release(ctx); return -e; }
    rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    if (rc < 0) { close(fd); return rc; }
    lseek(fd, 0, SEEK_SET);
    return fd;
}
