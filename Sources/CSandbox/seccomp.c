#define _GNU_SOURCE
#include "csandbox.h"
#include <errno.h>
#include <seccomp.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

// Syscalls no task needs: debugging other processes, changing mounts or the kernel, loading
// code into the kernel, the kernel keyring, raw performance counters, and namespace games.
static const char *const denied[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount", "umount2", "pivot_root",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "kexec_load", "kexec_file_load", "bpf", "keyctl", "add_key", "request_key", "init_module",
    "finit_module", "delete_module", "perf_event_open", "reboot", "swapon", "swapoff", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "quotactl",
    "setns", "unshare", "userfaultfd", "lookup_dcookie", "open_by_handle_at", "name_to_handle_at",
    "iopl", "ioperm", "vhangup", "nfsservctl", "uselib", "personality", "sethostname", "setdomainname",
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
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        if (rc < 0) { seccomp_release(ctx); return rc; }
    }
    int fd = memfd_create("starling-seccomp", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) { int e = errno; seccomp_release(ctx); return -e; }
    int rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    if (rc < 0) { close(fd); return rc; }
    lseek(fd, 0, SEEK_SET);
    return fd;
}
