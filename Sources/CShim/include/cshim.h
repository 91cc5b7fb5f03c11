#ifndef CSHIM_H
#define CSHIM_H

// Thin wrappers for what the Glibc Swift module does not expose. No _GNU_SOURCE here: defining it in a
// header that Swift imports breaks the Glibc module on a clean build; the .c file defines it privately.

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#define CSHIM_EPOLLIN 0x001u
#define CSHIM_EPOLLOUT 0x004u
#define CSHIM_EPOLLERR 0x008u
#define CSHIM_EPOLLHUP 0x010u
#define CSHIM_EPOLLRDHUP 0x2000u
#define CSHIM_EPOLLEXCLUSIVE (1u << 28)

/// epoll_create1(EPOLL_CLOEXEC).
int cshim_epoll_create(void);
/// op: 1 add, 2 delete, 3 modify. `data` is returned by cshim_epoll_wait.
int cshim_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// Waits and unpacks the (packed on x86_64) epoll_event array into two plain arrays.
int cshim_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int maxevents, int timeout_ms);

/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC).
int cshim_eventfd(void);
/// signalfd for SIGTERM, SIGINT, SIGHUP (and SIGCHLD when with_chld), after blocking them in this thread.
int cshim_signalfd_setup(int with_chld);
/// Blocks SIGTERM, SIGINT, SIGHUP, SIGCHLD in the calling thread (threads created later inherit it).
int cshim_block_signals(void);
/// Reads one signal from a signalfd; returns the signal number, 0 when none is pending, -1 on error.
int cshim_signalfd_read(int fd);

/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC.
int cshim_accept(int fd, struct sockaddr *addr, socklen_t *len);
/// SO_PEERCRED of a Unix socket; returns 0 on success.
int cshim_peercred(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid);
/// socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0).
int cshim_socket(int domain, int type);
/// send with MSG_NOSIGNAL.
ssize_t cshim_send(int fd, const void *buf, size_t len);

/// Number of CPUs this process may run on (sched_getaffinity).
int cshim_cpu_count(void);
/// The calling thread's kernel id.
int cshim_gettid(void);
int cshim_thread_slot(void);

/// An unnamed temporary file in `dir` (O_TMPFILE | O_RDWR | O_CLOEXEC, mode 0600).
int cshim_open_tmpfile(const char *dir);

/// getrandom(2): fills `buf` with `len` random bytes; returns 0 on success.
int cshim_getrandom(void *buf, size_t len);

/// posix_spawn with stdin/stdout/stderr set to the given descriptors (-1: inherit), working directory `cwd`
/// (NULL: inherit), every other descriptor closed (closefrom 3), default signal dispositions, an empty signal
/// mask, and a new process group when `new_pgroup`. Returns 0 and sets *pid, or an errno value.
int cshim_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *cwd,
                int in_fd, int out_fd, int err_fd, int new_pgroup);

/// CRC-32C (Castagnoli) of `len` bytes, continuing from `crc` (0 to start). SSE 4.2 when the CPU has it.
uint32_t cshim_crc32c(uint32_t crc, const void *buf, size_t len);
/// The same, always by table (tests compare the two paths).
uint32_t cshim_crc32c_software(uint32_t crc, const void *buf, size_t len);

/// flock(fd, LOCK_EX | LOCK_NB); returns 0, or an errno value (EWOULDBLOCK when another holds it).
int cshim_flock_exclusive(int fd);

/// pidfd_open(2): a descriptor that becomes readable when the process exits; -1 and errno on failure.
int cshim_pidfd_open(pid_t pid);

/* Starts a ChimeraX: like cshim_spawn with a new process group, and the daemon's ambient capabilities
   cleared; with `netns_fd` >= 0, the child first moves into that network namespace (cshim_netns_create);
   with `nice` > 0 it runs at that nice value. Returns 0 or an errno (the child's, if it failed before exec). */
int cshim_spawn_session(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *cwd,
                        int in_fd, int out_fd, int err_fd, int netns_fd, int nice);
/* A new network namespace with only its loopback interface, up: a descriptor holding it, or -errno. */
int cshim_netns_create(void);
/* Makes this process the reaper of its descendants' orphans (PR_SET_CHILD_SUBREAPER); 0 or -errno. */
int cshim_set_subreaper(void);
/* 1 if this process may create network namespaces (it makes one and drops it), else 0. */
int cshim_netns_available(void);
/* A socket created inside the network namespace `nsfd` (the calling thread enters it for the socket() call
   and returns to its own); the descriptor or -errno. */
int cshim_socket_in_netns(int nsfd, int domain, int type);
/* The inode of the network namespace socket `s` belongs to (SIOCGSKNS), or -errno. */
long long cshim_socket_netns_inode(int s);
/* Moves the calling thread into the network namespace `nsfd` (benchmarks: a thread that stays there). */
int cshim_setns_net(int nsfd);

/* The 64 round constants of SHA-256 (FIPS 180-4 §4.2.2), for both compressions. */
const uint32_t *cshim_sha256_constants(void);
/* SHA-256 compression with the x86 SHA extensions: 1 if this CPU has them. */
int cshim_sha256_hw(void);
/* Compresses `blocks` 64-byte blocks of `data` into `state` (8 words, FIPS 180-4 order); only when
   cshim_sha256_hw() is 1. */
void cshim_sha256_blocks(uint32_t state[8], const unsigned char *data, size_t blocks);
/// Reaps the process behind a pidfd if it has exited: returns 1 and sets *code (exit status, or -1) and
/// *signal (terminating signal, or 0); 0 if it is still running; -1 on error.
int cshim_pidfd_reap(int pidfd, int *code, int *signal);
/// pipe2 with O_CLOEXEC on both ends and O_NONBLOCK on the end this process keeps (`nonblock_read`: the read
/// end, else the write end). Returns 0 or -1.
int cshim_pipe(int fds[2], int nonblock_read);
/// prlimit(2) on another process: soft and hard limit both `value`. Returns 0 or -1.
int cshim_set_limit(pid_t pid, int resource, unsigned long long value);

/// memmem(3), which the Glibc module hides (a GNU extension).
const void *cshim_memmem(const void *haystack, size_t hlen, const void *needle, size_t nlen);

#endif
