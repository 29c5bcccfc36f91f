/* abi_fuzz: N random raw system calls with garbage arguments, for harness/tests/abi_fuzz.rs
 * (not a compat case: it runs only under vbench, never natively, because it passes numbers
 * the table does not know, which a real kernel would carry out).
 *
 * usage: abi_fuzz SEED N
 *
 * Numbers come from the linux_abi table (backends/src/linux_abi/table.rs) less the calls the
 * program could not survive, plus numbers the table does not know (335..450, 500..600).
 * Arguments come from pools by the kind of each argument (SIGS below): small ints and fds,
 * random flag bits, lengths, pointers into a scratch buffer, garbage pointers, relative paths
 * from a fixed pool. Lengths and scratch pointers are bounded so that a call that is allowed
 * to write (the whole range is the program's memory) stays inside the scratch buffer; canary
 * pages before and after it are never passed to a call, and are checked at the end.
 *
 * What is shaped so that the program survives and never blocks, and never reaches outside its
 * temporary directory or the loopback network:
 * - excluded: exit, exit_group, kill, tkill, tgkill, rt_sigaction, rt_sigreturn,
 *   rt_sigprocmask, sigaltstack, pause, rt_sigsuspend, chdir, fchdir, execve, execveat, fork,
 *   vfork, clone, clone3; and, since bt's guest is a host process of its own that makes them
 *   for real, alarm and setitimer (a timer's default action ends the program, as natively)
 *   and setpgid and setsid (they would take it out of the process group vbench kills);
 * - descriptors: before a call that could block on its descriptor (read, write, the vectored
 *   ones, send, recv, accept, connect, sendfile, copy_file_range) that descriptor is made
 *   non-blocking with fcntl(F_SETFL) (so accept, recv and read on pipes are kept, and
 *   return EAGAIN); open and openat always have O_NONBLOCK, and creat, which cannot, never
 *   meets a FIFO: mknod never makes FIFOs (nor devices);
 *   flock always has LOCK_NB; fcntl's waiting locks become non-waiting ones, and F_SETOWN,
 *   F_SETSIG, F_SETLEASE, F_NOTIFY and O_ASYNC (signals to other processes or to itself)
 *   are never asked for;
 * - sleeps: nanosleep, clock_nanosleep, futex, ppoll and pselect6 get a timespec of at most
 *   1 ms (or a garbage pointer), never none; poll's, epoll_wait's and select's timeouts are 0;
 * - memory calls get addresses 0, garbage, or inside a 16 MiB region mapped at start (mmap
 *   without MAP_FIXED also random hints); brk only 0, garbage or growth;
 * - arch_prctl never sets FS or GS;
 * - sockets: AF_UNIX, AF_INET (loopback addresses only: every socket address passed is a
 *   loopback one, a relative or abstract Unix one, or garbage) and invalid domains; no raw
 *   or packet sockets;
 * - paths are always from the pool (or garbage pointers), never scratch bytes (which may
 *   hold "..", or an absolute path getcwd wrote); mknod never makes devices.
 * - fallocate's offset and length, and sendfile's and copy_file_range's counts, are small:
 *   no large allocation on the host's disk.
 * The summary goes to a copy of stdout at fd 1000, out of the fd pools' reach, after clearing
 * O_NONBLOCK, O_DIRECT and O_APPEND that fcntl may have set on the pipe it shares.
 * The test gives it pipes for stdin, stdout and stderr: fchmod, ftruncate... on descriptors
 * 0-2 must reach nothing of the host (with stdin a device node, they would chmod the node),
 * so it refuses to start (exit 2) when one of them is not a pipe or a socket.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define SCRATCH (64 * 1024)
#define HALF (SCRATCH / 2)
#define REGION (16u << 20)
#define OUT_FD 1000

static unsigned char area[PAGE + SCRATCH + PAGE] __attribute__((aligned(PAGE)));
#define CANARY_LO (area)
#define SCR (area + PAGE)
#define CANARY_HI (area + PAGE + SCRATCH)

/* fixed slots at the start of the scratch buffer, rebuilt before every call */
#define PATHS_AT 0     /* the path pool, 32 bytes each */
#define SA_AT 512      /* a socket address, 128 bytes */
#define TS_AT 640      /* a tiny timespec */
#define TS2_AT 656     /* a second one */
#define MSG_AT 704     /* a msghdr */
#define IOV_AT 768     /* 8 iovecs */
#define DATA_AT 1024   /* the rest of the low half is general data */

static const char *const PATHS[] = {"a", "b", "d", "d/e", "", "nonexistent", "f.txt", "d/f"};
#define NPATHS (sizeof PATHS / sizeof PATHS[0])

static uint64_t state;
static uint64_t rnd(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}
static uint64_t below(uint64_t n) { return rnd() % n; }

static const uint64_t GARBAGE[] = {
    0, 1, 0xfff, 0x7ffffffff000ull, 0xffff800000000000ull, UINT64_MAX - 7,
    0x555555550000ull, 0x7f0000000000ull, 0x1000, 0xdeadbeefull, 0x8000000000000000ull,
};
#define NGARBAGE (sizeof GARBAGE / sizeof GARBAGE[0])

static uint64_t garbage(void) { return GARBAGE[below(NGARBAGE)]; }

static uint64_t small_int(void) {
    switch (below(8)) {
    case 0: return 0xffffffffull;
    case 1: return (uint64_t)-100; /* AT_FDCWD */
    default: return (uint64_t)((int64_t)below(22) - 1); /* -1..20 */
    }
}

static uint64_t flags(void) {
    switch (below(4)) {
    case 0: return rnd();
    case 1: return rnd() & 0xffffffffull;
    case 2: return 1ull << below(32);
    default: return rnd() & rnd() & 0xffff;
    }
}

/* lengths: all either at most HALF or certainly beyond any guest memory */
static uint64_t length(void) {
    switch (below(12)) {
    case 0: return 0;
    case 1: return 1;
    case 2: return 8;
    case 3: return 16;
    case 4: return PAGE;
    case 5: return 1ull << 40;
    case 6: return (uint64_t)-1;
    case 7: return (uint64_t)-4096;
    case 8: return 1ull << 62;
    case 9: return 0x8000000000000000ull;
    default: return below(HALF - DATA_AT);
    }
}

/* a pointer into the low half of scratch, so that any allowed length stays inside it */
static uint64_t scratch_ptr(void) {
    uint64_t off = below(4) ? DATA_AT + below(HALF - DATA_AT) : below(HALF);
    if (below(2)) off &= ~7ull;
    return (uint64_t)(uintptr_t)(SCR + off);
}

static unsigned char *region;

/* a pointer into the 16 MiB region (which calls may have unmapped, protected or mapped files
 * over), far enough from its end for any allowed length */
static uint64_t region_ptr(void) {
    return (uint64_t)(uintptr_t)region + below(REGION - HALF);
}

static uint64_t buffer(void) {
    switch (below(10)) {
    case 0: return garbage();
    case 1: return 0;
    case 2: return region_ptr();
    default: return scratch_ptr();
    }
}

static uint64_t path(void) {
    if (below(10) == 0) return garbage();
    return (uint64_t)(uintptr_t)(SCR + PATHS_AT + 32 * below(NPATHS));
}

static uint64_t fd(void) {
    if (below(16) == 0) return rnd();
    return small_int() == (uint64_t)-100 ? 3 : small_int();
}

static uint64_t dirfd(void) {
    if (below(2)) return (uint64_t)-100;
    return fd();
}

/* anything: what a guest passing garbage passes */
static uint64_t any(void) {
    switch (below(5)) {
    case 0: return small_int();
    case 1: return flags();
    case 2: return length();
    case 3: return garbage();
    default: return rnd();
    }
}

static uint64_t mem_addr(void) {
    switch (below(6)) {
    case 0: return 0;
    case 1: return garbage();
    case 2: return region_ptr(); /* unaligned */
    default: return (uint64_t)(uintptr_t)region + (below(REGION / PAGE - HALF / PAGE) * PAGE);
    }
}

static uint64_t mem_len(void) {
    switch (below(5)) {
    case 0: return REGION;
    case 1: return below(8) * PAGE;
    default: return length();
    }
}

/* Pointers no call can map: a timeout's garbage pointer must be EFAULT, never garbage that an
 * earlier mmap put there (0xdeadbeef lies in bt's mapping area) and that means a long sleep. */
static const uint64_t UNMAPPABLE[] = {0xffff800000000000ull, UINT64_MAX - 7,
                                      0x8000000000000000ull, 0xdead000000000000ull};

static uint64_t timespec(void) {
    if (below(8) == 0) return UNMAPPABLE[below(4)] | 1; /* never NULL: NULL means forever */
    return (uint64_t)(uintptr_t)(SCR + (below(2) ? TS_AT : TS2_AT));
}

static uint64_t sockaddr(void) {
    switch (below(6)) {
    case 0: return 0;
    case 1: return garbage();
    default: return (uint64_t)(uintptr_t)(SCR + SA_AT);
    }
}

static uint64_t sock_len(void) {
    static const uint64_t L[] = {0, 2, 3, 16, 110, 128, PAGE, 0xffffffffull, (uint64_t)-1};
    if (below(3) == 0) return length();
    return L[below(sizeof L / sizeof L[0])];
}

static uint64_t iovec_ptr(void) {
    if (below(8) == 0) return garbage();
    return (uint64_t)(uintptr_t)(SCR + IOV_AT + 16 * below(4));
}

static uint64_t iov_count(void) {
    static const uint64_t C[] = {0, 1, 2, 3, 4, 1024, 1025, 0xffffffffull, (uint64_t)-1};
    return C[below(sizeof C / sizeof C[0])];
}

static uint64_t msghdr(void) {
    if (below(8) == 0) return garbage();
    return (uint64_t)(uintptr_t)(SCR + MSG_AT);
}

static uint64_t domain(void) {
    static const uint64_t D[] = {AF_UNIX, AF_UNIX, AF_INET, AF_INET, AF_UNSPEC, 46, 1000,
                                 0xffffffffull};
    return D[below(sizeof D / sizeof D[0])];
}

static uint64_t sock_type(void) {
    static const uint64_t T[] = {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET, 0, 7, 11, 0xff};
    uint64_t t = T[below(sizeof T / sizeof T[0])];
    if (below(2)) t |= SOCK_NONBLOCK;
    if (below(2)) t |= SOCK_CLOEXEC;
    return t;
}

static uint64_t node_mode(void) {
    static const uint64_t T[] = {0, S_IFREG, S_IFSOCK};
    return T[below(3)] | (rnd() & 07777);
}

/* Refreshes the fixed slots (calls may have written over them). */
static void rebuild(void) {
    for (unsigned i = 0; i < NPATHS; i++) {
        memset(SCR + PATHS_AT + 32 * i, 0, 32);
        strcpy((char *)SCR + PATHS_AT + 32 * i, PATHS[i]);
    }
    memset(SCR + SA_AT, 0, 128);
    switch (below(4)) {
    case 0:
    case 1: {
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons(below(2) ? 0 : 47000 + below(8)),
                                  .sin_addr.s_addr = htonl(0x7f000001)};
        memcpy(SCR + SA_AT, &sin, sizeof sin);
        break;
    }
    case 2: {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        strcpy(sun.sun_path, below(2) ? "s" : "d/s");
        memcpy(SCR + SA_AT, &sun, sizeof sun);
        break;
    }
    default: {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        memcpy(sun.sun_path, "\0vbench-abi-fuzz", 16); /* abstract */
        memcpy(SCR + SA_AT, &sun, sizeof sun);
        break;
    }
    }
    struct timespec ts = {0, (long)below(1000000)};
    memcpy(SCR + TS_AT, &ts, sizeof ts);
    struct timespec zero = {0, 0};
    memcpy(SCR + TS2_AT, &zero, sizeof zero);
    struct iovec *iov = (struct iovec *)(SCR + IOV_AT);
    for (int i = 0; i < 8; i++) {
        iov[i].iov_base = below(8) ? (void *)(uintptr_t)scratch_ptr() : (void *)garbage();
        iov[i].iov_len = below(8) ? below(PAGE) : length();
        if (iov[i].iov_len > PAGE && iov[i].iov_len <= HALF) iov[i].iov_len = PAGE;
    }
    struct msghdr m = {0};
    m.msg_name = (void *)(uintptr_t)sockaddr();
    m.msg_namelen = (socklen_t)sock_len();
    m.msg_iov = (struct iovec *)(uintptr_t)iovec_ptr();
    m.msg_iovlen = below(5);
    if (below(8) == 0) {
        m.msg_control = (void *)(uintptr_t)scratch_ptr();
        m.msg_controllen = below(64);
    }
    m.msg_flags = (int)flags();
    memcpy(SCR + MSG_AT, &m, sizeof m);
}

/* Argument kinds, one letter each:
 * x anything  f fd  F dirfd  p path  b buffer  l length  o open flags  v iovec array
 * c iovec count  s socket address  L socket address length  m msghdr  t timespec
 * a memory address  M memory length  k socket domain  T socket type  n node mode
 * 0 zero  i small int */
struct sig {
    long nr;
    const char *kinds;
};

static const struct sig SIGS[] = {
    {SYS_read, "fbl"}, {SYS_write, "fbl"}, {SYS_pread64, "fblx"}, {SYS_pwrite64, "fblx"},
    {SYS_readv, "fvc"}, {SYS_writev, "fvc"}, {SYS_preadv, "fvcxx"}, {SYS_pwritev, "fvcxx"},
    {SYS_lseek, "fxi"}, {SYS_close, "f"}, {SYS_dup, "f"}, {SYS_dup2, "ff"},
    {SYS_dup3, "ffx"}, {SYS_fcntl, "fxx"}, {SYS_ioctl, "fxb"}, {SYS_pipe, "b"},
    {SYS_pipe2, "bx"}, {SYS_poll, "bi0"}, {SYS_ppoll, "bitbl"}, {SYS_sendfile, "ffbl"},
    {SYS_copy_file_range, "fbfblx"}, {SYS_fsync, "f"}, {SYS_fdatasync, "f"},
    {SYS_syncfs, "f"}, {SYS_ftruncate, "fx"}, {SYS_fallocate, "fxxx"},
    {SYS_fadvise64, "fxxx"}, {SYS_flock, "fx"}, {SYS_fchmod, "fx"}, {SYS_fchown, "fxx"},
    {SYS_select, "xbbbb"}, {SYS_pselect6, "xbbbbb"}, {SYS_epoll_create1, "x"},
    {SYS_eventfd2, "xx"}, {SYS_epoll_ctl, "fxfb"}, {SYS_epoll_wait, "fbx0"},
    {SYS_epoll_pwait, "fbx0bx"}, {SYS_timerfd_create, "xx"}, {SYS_timerfd_settime, "fxbb"},
    {SYS_timerfd_gettime, "fb"},
    {SYS_open, "pox"}, {SYS_openat, "Fpox"}, {SYS_creat, "px"}, {SYS_stat, "pb"},
    {SYS_lstat, "pb"}, {SYS_fstat, "fb"}, {SYS_newfstatat, "Fpbx"}, {SYS_statx, "Fpxxb"},
    {SYS_access, "px"}, {SYS_faccessat, "Fpx"}, {SYS_faccessat2, "Fpxx"},
    {SYS_getdents64, "fbl"}, {SYS_getcwd, "bl"}, {SYS_mkdir, "px"}, {SYS_mkdirat, "Fpx"},
    {SYS_mknod, "pnx"}, {SYS_mknodat, "Fpnx"}, {SYS_rmdir, "p"}, {SYS_unlink, "p"},
    {SYS_unlinkat, "Fpx"}, {SYS_rename, "pp"}, {SYS_renameat, "FpFp"},
    {SYS_renameat2, "FpFpx"}, {SYS_link, "pp"}, {SYS_linkat, "FpFpx"}, {SYS_symlink, "pp"},
    {SYS_symlinkat, "pFp"}, {SYS_readlink, "pbl"}, {SYS_readlinkat, "Fpbl"},
    {SYS_chmod, "px"}, {SYS_fchmodat, "Fpxx"}, {SYS_chown, "pxx"}, {SYS_lchown, "pxx"},
    {SYS_fchownat, "Fpxxx"}, {SYS_truncate, "px"}, {SYS_utimensat, "Fpbx"},
    {SYS_utimes, "pb"}, {SYS_statfs, "pb"}, {SYS_fstatfs, "fb"}, {SYS_sync, ""},
    {SYS_umask, "x"},
    {SYS_brk, "a"}, {SYS_mmap, "aMxxfx"}, {SYS_munmap, "aM"}, {SYS_mprotect, "aMx"},
    {SYS_mremap, "aMMxa"}, {SYS_madvise, "aMx"}, {SYS_msync, "aMx"}, {SYS_mincore, "aMb"},
    {SYS_mlock, "aM"}, {SYS_munlock, "aM"}, {SYS_mlockall, "x"}, {SYS_munlockall, ""},
    {SYS_getpid, ""}, {SYS_gettid, ""}, {SYS_getppid, ""}, {SYS_getuid, ""},
    {SYS_geteuid, ""}, {SYS_getgid, ""}, {SYS_getegid, ""}, {SYS_getresuid, "bbb"},
    {SYS_getresgid, "bbb"}, {SYS_getgroups, "lb"}, {SYS_getpgrp, ""}, {SYS_getpgid, "i"},
    {SYS_getsid, "i"}, {SYS_setuid, "x"},
    {SYS_setgid, "x"}, {SYS_setreuid, "xx"}, {SYS_setregid, "xx"}, {SYS_setresuid, "xxx"},
    {SYS_setresgid, "xxx"}, {SYS_setgroups, "lb"}, {SYS_wait4, "ibxb"},
    {SYS_waitid, "iibxb"}, {SYS_set_tid_address, "b"}, {SYS_set_robust_list, "bl"},
    {SYS_rseq, "blxx"}, {SYS_futex, "bxxtbx"}, {SYS_arch_prctl, "xb"},
    {SYS_prctl, "xbxxx"}, {SYS_uname, "b"}, {SYS_sysinfo, "b"}, {SYS_getrusage, "ib"},
    {SYS_times, "b"}, {SYS_getrlimit, "ib"}, {SYS_setrlimit, "ib"}, {SYS_prlimit64, "iibb"},
    {SYS_sched_getaffinity, "ilb"}, {SYS_sched_setaffinity, "ilb"}, {SYS_sched_yield, ""},
    {SYS_getcpu, "bbb"}, {SYS_getpriority, "ii"}, {SYS_getrandom, "blx"},
    {SYS_rt_sigpending, "bl"}, {SYS_getitimer, "ib"}, {SYS_timer_create, "ibb"},
    {SYS_clock_gettime, "ib"}, {SYS_clock_getres, "ib"}, {SYS_gettimeofday, "bb"},
    {SYS_time, "b"}, {SYS_nanosleep, "tb"}, {SYS_clock_nanosleep, "ixtb"},
    {SYS_socket, "kTx"}, {SYS_socketpair, "kTxb"}, {SYS_connect, "fsL"}, {SYS_bind, "fsL"},
    {SYS_listen, "fx"}, {SYS_shutdown, "fx"}, {SYS_accept, "fbb"}, {SYS_accept4, "fbbx"},
    {SYS_getsockname, "fbb"}, {SYS_getpeername, "fbb"}, {SYS_sendto, "fblxsL"},
    {SYS_recvfrom, "fblxbb"}, {SYS_sendmsg, "fmx"}, {SYS_recvmsg, "fmx"},
    {SYS_setsockopt, "fxxbl"}, {SYS_getsockopt, "fxxbb"},
};
#define NSIGS (sizeof SIGS / sizeof SIGS[0])

static uint64_t arg(char kind) {
    switch (kind) {
    case 'f': return fd();
    case 'F': return dirfd();
    case 'p': return path();
    case 'b': return buffer();
    case 'l': return length();
    case 'o': return flags() | O_NONBLOCK;
    case 'v': return iovec_ptr();
    case 'c': return iov_count();
    case 's': return sockaddr();
    case 'L': return sock_len();
    case 'm': return msghdr();
    case 't': return timespec();
    case 'a': return mem_addr();
    case 'M': return mem_len();
    case 'k': return domain();
    case 'T': return sock_type();
    case 'n': return node_mode();
    case '0': return 0;
    case 'i': return small_int();
    default: return any();
    }
}

static void nonblock(uint64_t f) {
    long fl = syscall(SYS_fcntl, f, F_GETFL, 0);
    if (fl >= 0) syscall(SYS_fcntl, f, F_SETFL, fl | O_NONBLOCK);
}

/* The last changes that keep the program alive and the call from blocking. */
static void shape(long nr, uint64_t *a) {
    switch (nr) {
    case SYS_read: case SYS_write: case SYS_readv: case SYS_writev: case SYS_recvfrom:
    case SYS_sendto: case SYS_recvmsg: case SYS_sendmsg: case SYS_accept: case SYS_accept4:
    case SYS_connect: case SYS_pread64: case SYS_pwrite64: case SYS_preadv: case SYS_pwritev:
        nonblock(a[0]);
        break;
    case SYS_sendfile:
        nonblock(a[0]);
        nonblock(a[1]);
        if (a[3] > HALF) a[3] &= 0xffff;
        break;
    case SYS_copy_file_range:
        nonblock(a[0]);
        nonblock(a[2]);
        if (a[4] > HALF) a[4] &= 0xffff;
        break;
    case SYS_fallocate: /* never a large allocation on the host's disk */
        a[2] &= 0xfffff;
        a[3] &= 0xfffff;
        break;
    case SYS_flock:
        a[1] |= LOCK_NB;
        break;
    case SYS_fcntl: {
        static const uint64_t CMDS[] = {F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK,
                                        F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK,
                                        F_OFD_SETLKW, F_GETPIPE_SZ, F_SETPIPE_SZ,
                                        F_DUPFD_CLOEXEC, F_GETLEASE, F_GETOWN, 1033, 9999};
        a[1] = below(4) ? CMDS[below(sizeof CMDS / sizeof CMDS[0])] : flags();
        int cmd = (int)a[1];
        if (cmd == F_SETLKW) a[1] = F_SETLK;
        if (cmd == F_OFD_SETLKW) a[1] = F_OFD_SETLK;
        if (cmd == F_SETOWN || cmd == F_SETSIG || cmd == F_SETLEASE || cmd == F_NOTIFY ||
            cmd == F_SETOWN_EX || cmd == F_SETLKW || cmd == F_OFD_SETLKW)
            a[1] = F_GETFL;
        if ((int)a[1] == F_SETFL) a[2] &= ~(uint64_t)O_ASYNC;
        if ((int)a[1] == F_GETLK || (int)a[1] == F_SETLK || (int)a[1] == F_OFD_GETLK ||
            (int)a[1] == F_OFD_SETLK)
            a[2] = buffer();
        break;
    }
    case SYS_ioctl:
        if ((unsigned)a[1] == FIOASYNC) a[1] = FIONREAD;
        break;
    case SYS_arch_prctl:
        if ((int)a[0] == 0x1001 || (int)a[0] == 0x1002) a[0] = 0x1003; /* ARCH_GET_FS */
        break;
    case SYS_brk: {
        long cur = syscall(SYS_brk, 0);
        if (below(2) && cur > 0) a[0] = cur + below(16) * PAGE;
        else if (a[0] >= (uint64_t)(uintptr_t)region &&
                 a[0] < (uint64_t)(uintptr_t)region + REGION)
            a[0] = 0;
        break;
    }
    case SYS_mmap:
        if (!(a[3] & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && below(2)) a[0] = rnd() & ~0xfffull;
        break;
    case SYS_mremap:
        if (!(a[3] & MREMAP_FIXED) && below(2)) a[4] = rnd();
        break;
    case SYS_select: /* never an unbounded wait: a zero timeval */
        a[4] = (uint64_t)(uintptr_t)(SCR + TS2_AT);
        break;
    case SYS_pselect6: /* at most 1 ms */
        a[4] = (uint64_t)(uintptr_t)(SCR + TS_AT);
        break;
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
        a[3] = 0;
        break;
    case SYS_futex:
        a[1] = below(4) ? (rnd() % 13) | (below(2) ? 128 : 0) | (below(4) ? 0 : 256) : flags();
        if (below(2)) a[2] = rnd() | 0x80000000ull; /* a value the word rarely has */
        break;
    case SYS_socket:
    case SYS_socketpair:
        if (below(8) == 0) a[2] = 0;
        break;
    }
}

static int in_sigs(long nr) {
    for (unsigned i = 0; i < NSIGS; i++)
        if (SIGS[i].nr == nr) return 1;
    return 0;
}

static void fill_canaries(void) {
    for (int i = 0; i < PAGE; i++) {
        CANARY_LO[i] = (unsigned char)(0xa5 ^ i);
        CANARY_HI[i] = (unsigned char)(0x5a ^ i);
    }
}

static int canaries_ok(void) {
    for (int i = 0; i < PAGE; i++)
        if (CANARY_LO[i] != (unsigned char)(0xa5 ^ i) ||
            CANARY_HI[i] != (unsigned char)(0x5a ^ i))
            return 0;
    return 1;
}

/* Writes all of s to the saved stdout, waiting where it is full (and non-blocking); a
 * failure is told on stderr with its errno. */
static void say(const char *s) {
    size_t n = strlen(s), done = 0;
    for (int tries = 0; n > 0 && tries < 1000; tries++) {
        long w = syscall(SYS_write, OUT_FD, s, n);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            done += (size_t)w;
            continue;
        }
        int e = errno;
        if (w < 0 && (e == EAGAIN || e == EINTR)) {
            struct pollfd p = {.fd = OUT_FD, .events = POLLOUT};
            syscall(SYS_poll, &p, 1, 100);
            continue;
        }
        char m[120];
        snprintf(m, sizeof m, "abi_fuzz: the summary's write gave %ld (errno %d) after %zu bytes\n",
                 w, e, done);
        syscall(SYS_write, 2, m, strlen(m));
        return;
    }
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: abi_fuzz SEED N [trace]\n");
        return 2;
    }
    state = strtoull(argv[1], 0, 0) * 0x9e3779b97f4a7c15ull + 1;
    long n = strtol(argv[2], 0, 0);
    int trace = argc == 4; /* each call on stderr before it is made: to find the one that fails */
    /* descriptors 0-2 get fchmod, fchown, ftruncate, fallocate, pwrite...: refuse anything
     * but pipes and sockets, which such calls cannot harm (a /dev/null stdin or a 2>/dev/null
     * would have the node's mode and owner changed on the host) */
    for (int f = 0; f < 3; f++) {
        struct stat st;
        if (fstat(f, &st) == 0 && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode)) {
            fprintf(stderr, "abi_fuzz: descriptor %d is not a pipe or a socket: refusing\n", f);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (dup2(1, OUT_FD) != OUT_FD) {
        perror("dup2");
        return 2;
    }
    region = mmap(0, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    fill_canaries();

    static unsigned char seen[1024];
    long distinct = 0, errors = 0;
    for (long i = 0; i < n; i++) {
        long nr;
        uint64_t a[6];
        const char *kinds = "";
        switch (below(16)) {
        case 0: nr = 335 + (long)below(116); break;
        case 1: nr = 500 + (long)below(101); break;
        default: {
            const struct sig *s = &SIGS[below(NSIGS)];
            nr = s->nr;
            kinds = s->kinds;
        }
        }
        if (kinds[0] == 0 && in_sigs(nr)) { /* a table number drawn from the ranges */
            for (unsigned j = 0; j < NSIGS; j++)
                if (SIGS[j].nr == nr) kinds = SIGS[j].kinds;
        }
        rebuild();
        size_t k = strlen(kinds);
        for (int j = 0; j < 6; j++) a[j] = j < (int)k ? arg(kinds[j]) : any();
        shape(nr, a);
        if (trace) {
            char t[200];
            snprintf(t, sizeof t, "call %ld: %ld(%#lx, %#lx, %#lx, %#lx, %#lx, %#lx)\n", i, nr,
                     a[0], a[1], a[2], a[3], a[4], a[5]);
            syscall(SYS_write, OUT_FD, t, strlen(t));
        }
        long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        if (r < 0) errors++;
        if (!seen[nr]) {
            seen[nr] = 1;
            distinct++;
        }
    }

    /* fcntl(F_SETFL) may have made stdout (the pipe it shares with the test) non-blocking,
     * or a packet pipe (O_DIRECT: a reader's short read drops the rest of a write) */
    long fl = syscall(SYS_fcntl, OUT_FD, F_GETFL, 0);
    if (fl >= 0) syscall(SYS_fcntl, OUT_FD, F_SETFL, fl & ~(O_NONBLOCK | O_DIRECT | O_APPEND));
    int ok = canaries_ok();
    char line[160];
    snprintf(line, sizeof line, "\nfuzz: %ld calls, %ld distinct syscalls, %ld errors, %s\n", n,
             distinct, errors, ok ? "canaries intact" : "CANARY CHANGED");
    say(line);
    syscall(SYS_exit_group, ok ? 0 : 3);
    return ok ? 0 : 3;
}
