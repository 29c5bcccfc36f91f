//! A system call's failure: a Linux error number, as a type.

/// A Linux error number (positive); the guest sees its negation in rax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*
        }
    };
}

errnos!(
    EPERM,
    E2BIG,
    ENOEXEC,
    ELOOP,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    EBADF,
    ECHILD,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EEXIST,
    ENOTDIR,
    EINVAL,
    EMFILE,
    ENOTTY,
    ESPIPE,
    ENAMETOOLONG,
    ENOSYS,
    ENODEV,
    EOVERFLOW,
    EPIPE,
);

impl Errno {
    /// The calling thread's errno after a failed host call.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// From an I/O error of std.
    pub fn of(err: &std::io::Error) -> Errno {
        Errno(err.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The value the guest sees in rax.
    pub fn ret(self) -> i64 {
        -i64::from(self.0)
    }
}

/// A raw system call's result (`-errno` on failure, as the kernel returns it) as a Result.
pub fn raw(r: i64) -> Result<i64, Errno> {
    if r < 0 {
        Err(Errno(-r as i32))
    } else {
        Ok(r)
    }
}

/// A host call's result as the guest gets it: `rc` unless it is -1, then errno.
pub fn host(rc: i64) -> Result<i64, Errno> {
    if rc == -1 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}
