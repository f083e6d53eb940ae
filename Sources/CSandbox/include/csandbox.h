#ifndef STARLING_CSANDBOX_H
#define STARLING_CSANDBOX_H
#include <sys/types.h>

/// Set in starling_spawn's negated result when the child could not join a cgroup (it would
/// have run without that group's limits); bits 16-23 then hold the index of the failing
/// `cgroup_procs` entry and bits 0-15 the errno.
#define STARLING_SPAWN_CGROUP_FAILED 0x01000000

/// Spawns `path` with `argv` and `envp` (both NULL-terminated). In the child, before exec:
/// joins each cgroup whose `cgroup.procs` path is given (so no descendant can escape by forking
/// early), starts a new process group, asks for SIGKILL if the parent dies, maps `fds[i]` to
/// `targets[i]` and closes every other descriptor above 2.
/// Returns the child's pid, or -errno if the spawn or the exec failed.
pid_t starling_spawn(const char *path, char *const argv[], char *const envp[],
                     const int *fds, const int *targets, int nfds,
                     char *const cgroup_procs[], int ncgroups);

/// A sealed memfd holding the seccomp BPF program that denies the syscalls no task needs
/// (EPERM), for bwrap's --seccomp. Returns the fd, or -errno.
int starling_seccomp_filter_fd(void);

/// The number of syscalls the filter denies (for tests and docs).
int starling_seccomp_denied_count(void);



/// pipe2(O_CLOEXEC), which Swift's Glibc module does not export.
int starling_pipe_cloexec(int fds[2]);
/// pidfd_open(2): a descriptor that becomes readable when `pid` exits (Linux 5.3+), or -errno.
int starling_pidfd_open(pid_t pid);

/// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC), or -errno.
int starling_socketpair_cloexec(int fds[2]);

#endif
