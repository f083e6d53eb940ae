#ifndef STARLING_CSANDBOX_H
#define STARLING_CSANDBOX_H
#include <stddef.h>
#include <sys/types.h>

/// Set in starling_spawn's negated result when the child could not join a cgroup (it would
/// have run without that group's limits); bits 16-23 then hold the index of the failing
/// `cgroup_procs` entry and bits 0-15 the errno.
#define STARLING_SPAWN_CGROUP_FAILED 0x01000000

/// Spawns `path` with `argv` and `envp` (both NULL-terminated). In the child, before exec:
/// joins each cgroup whose `cgroup.procs` path is given (so no descendant can escape by forking
/// early), starts a new process group, asks for SIGKILL if the parent dies, maps `fds[i]` to
/// `targets[i]` and closes every other descriptor above 2.
/// Every spawn runs on one long-lived thread of this process, since PDEATHSIG follows the
/// thread that forked, not the process.
/// Returns the child's pid and sets `*pidfd` to a pidfd for it (or -1 without pidfd support),
/// or returns -errno if the spawn or the exec failed.
pid_t starling_spawn(const char *path, char *const argv[], char *const envp[],
                     const int *fds, const int *targets, int nfds,
                     char *const cgroup_procs[], int ncgroups, int *pidfd);

/// A memfd holding the task's seccomp BPF program, for bwrap's --seccomp: an allow-list modelled
/// on Docker's default profile (ENOSYS for the rest), EPERM for the calls denied by name, clone
/// without namespace flags, clone3 ENOSYS. Returns the fd, or -errno.
int starling_seccomp_filter_fd(void);

/// The number of syscalls the filter denies by name, and allows (for tests and docs).
int starling_seccomp_denied_count(void);
int starling_seccomp_allowed_count(void);

/// pipe2(O_CLOEXEC), which Swift's Glibc module does not export.
int starling_pipe_cloexec(int fds[2]);
/// pidfd_open(2): a descriptor that becomes readable when `pid` exits (Linux 5.3+), or -errno.
int starling_pidfd_open(pid_t pid);
/// pidfd_send_signal(2): signals exactly the process the pidfd was opened for, never a later
/// process that reuses its number. 0 or -errno.
int starling_pidfd_send_signal(int pidfd, int sig);

/// A close-on-exec memfd holding `bytes`, positioned at its start (bwrap's --args), or -errno.
int starling_memfd_holding(const void *bytes, size_t length);

/// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC), or -errno.
int starling_socketpair_cloexec(int fds[2]);

#endif
