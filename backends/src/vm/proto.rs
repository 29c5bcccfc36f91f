//! The wire protocol between the vm backend (host) and vbench's init in the guest (the agent,
//! crate `vbench-vm-agent`, which includes this file): frames on the guest's second serial port.
//! Plain std only, because both sides build it.
//!
//! A frame is `V B <kind> <len: u32 LE> <payload>`; a payload is a list of fields, each
//! `<len: u32 LE> <bytes>`. The kinds, by who sends them:
//! - agent: [`HELLO`] (booted: kernel release, CPUs, memory), [`OK`] / [`FAIL`] (to a request),
//!   [`STDOUT`] / [`STDERR`] (a run's output, as it comes), [`DONE`] (a run ended, see [`Done`]);
//! - host: [`PROGRAM`] (key, ELF bytes: kept in the guest's /progs), [`EXEC`] (see [`Exec`]),
//!   [`HALT`] (sync and power off).

/// Agent: booted; fields: kernel release, online CPUs, MemTotal in KiB.
pub const HELLO: u8 = b'H';
/// Agent: the request succeeded.
pub const OK: u8 = b'K';
/// Agent: the request failed; field: why.
pub const FAIL: u8 = b'F';
/// Agent: standard output of the run; field: the bytes.
pub const STDOUT: u8 = b'O';
/// Agent: standard error of the run; field: the bytes.
pub const STDERR: u8 = b'E';
/// Agent: the run ended; fields: see [`Done`].
pub const DONE: u8 = b'D';
/// Host: store a program; fields: key, bytes.
pub const PROGRAM: u8 = b'P';
/// Host: run a stored program; fields: see [`Exec`].
pub const EXEC: u8 = b'X';
/// Host: sync and power off.
pub const HALT: u8 = b'Q';

/// The bytes of standard error a capped run sends (its last ones, at the end).
pub const ERR_TAIL: usize = 4096;

/// The largest payload either side accepts (a program image).
pub const MAX_PAYLOAD: usize = 256 << 20;

const HEADER: usize = 7;

/// One frame: its kind and fields.
pub fn encode(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
    let len: usize = fields.iter().map(|f| 4 + f.len()).sum();
    let mut out = Vec::with_capacity(HEADER + len);
    out.extend_from_slice(&[b'V', b'B', kind]);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The fields of a payload.
pub fn fields(mut payload: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut v = Vec::new();
    while !payload.is_empty() {
        if payload.len() < 4 {
            return Err("a field's length is cut short".into());
        }
        let n = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes")) as usize;
        payload = &payload[4..];
        if payload.len() < n {
            return Err(format!(
                "a field of {n} bytes has only {} left",
                payload.len()
            ));
        }
        v.push(payload[..n].to_vec());
        payload = &payload[n..];
    }
    Ok(v)
}

/// Frames out of a byte stream, as bytes arrive.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// Adds bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame (kind, payload), `None` until one has arrived; an error for bytes
    /// that are not a frame.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        if self.buf.len() < HEADER {
            if !b"VB".starts_with(&self.buf[..self.buf.len().min(2)]) {
                return Err(self.garbage());
            }
            return Ok(None);
        }
        if &self.buf[..2] != b"VB" {
            return Err(self.garbage());
        }
        let len = u32::from_le_bytes(self.buf[3..7].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!(
                "a frame announces {len} bytes (at most {MAX_PAYLOAD})"
            ));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let kind = self.buf[2];
        let payload = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some((kind, payload)))
    }

    /// Drops bytes up to the first that could start a frame (noise before the first frame).
    pub fn skip_noise(&mut self) -> usize {
        let at = (0..self.buf.len())
            .find(|&i| b"VB".starts_with(&self.buf[i..(i + 2).min(self.buf.len())]))
            .unwrap_or(self.buf.len());
        self.buf.drain(..at);
        at
    }

    fn garbage(&self) -> String {
        let head: Vec<String> = self
            .buf
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("bytes that are not a frame: {}", head.join(" "))
    }
}

/// A run request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// The stored program's key.
    pub key: Vec<u8>,
    /// Kill it after this many milliseconds (0: never).
    pub timeout_ms: u64,
    /// argv, argv\[0\] first.
    pub argv: Vec<Vec<u8>>,
    /// The environment, `KEY=VALUE` each.
    pub env: Vec<Vec<u8>>,
    /// Send at most this much standard output, and only the last [`ERR_TAIL`] bytes of
    /// standard error (at the end); 0: stream both whole, as they come.
    pub out_cap: u64,
}

impl Exec {
    /// As a frame.
    pub fn encode(&self) -> Vec<u8> {
        let timeout = self.timeout_ms.to_string();
        let argc = self.argv.len().to_string();
        let cap = self.out_cap.to_string();
        let mut f: Vec<&[u8]> = vec![
            &self.key,
            timeout.as_bytes(),
            cap.as_bytes(),
            argc.as_bytes(),
        ];
        f.extend(self.argv.iter().map(Vec::as_slice));
        f.extend(self.env.iter().map(Vec::as_slice));
        encode(EXEC, &f)
    }

    /// From an [`EXEC`] payload.
    pub fn decode(payload: &[u8]) -> Result<Exec, String> {
        let mut f = fields(payload)?.into_iter();
        let mut next = |what: &str| f.next().ok_or(format!("an exec request lacks its {what}"));
        let key = next("key")?;
        let timeout_ms = number(&next("timeout")?, "timeout")?;
        let out_cap = number(&next("output cap")?, "output cap")?;
        let argc = number(&next("argument count")?, "argument count")? as usize;
        let rest: Vec<Vec<u8>> = f.collect();
        if rest.len() < argc || argc == 0 {
            return Err(format!(
                "an exec request announces {argc} arguments and carries {}",
                rest.len()
            ));
        }
        let (argv, env) = rest.split_at(argc);
        Ok(Exec {
            key,
            timeout_ms,
            argv: argv.to_vec(),
            env: env.to_vec(),
            out_cap,
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// exit status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Killed by the agent when its timeout passed.
    Timeout,
    /// The program could not be started; why.
    NotStarted(String),
}

/// The end of a run, measured in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// How it ended.
    pub ended: Ended,
    /// fork to reaping, guest clock.
    pub wall_ns: u64,
    /// fork to just before execve in the child.
    pub startup_ns: Option<u64>,
    /// User CPU time.
    pub user_ns: u64,
    /// System CPU time.
    pub sys_ns: u64,
    /// Peak RSS, KiB.
    pub max_rss_kib: u64,
    /// Bytes the program wrote to standard output (sent or not).
    pub stdout_bytes: u64,
}

impl Done {
    /// As a frame.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, value) = match &self.ended {
            Ended::Code(c) => ("code", c.to_string()),
            Ended::Signal(s) => ("signal", s.to_string()),
            Ended::Timeout => ("timeout", String::new()),
            Ended::NotStarted(why) => ("not-started", why.clone()),
        };
        let n = |v: u64| v.to_string();
        let startup = self.startup_ns.map(n).unwrap_or_default();
        encode(
            DONE,
            &[
                kind.as_bytes(),
                value.as_bytes(),
                n(self.wall_ns).as_bytes(),
                startup.as_bytes(),
                n(self.user_ns).as_bytes(),
                n(self.sys_ns).as_bytes(),
                n(self.max_rss_kib).as_bytes(),
                n(self.stdout_bytes).as_bytes(),
            ],
        )
    }

    /// From a [`DONE`] payload.
    pub fn decode(payload: &[u8]) -> Result<Done, String> {
        let f = fields(payload)?;
        if f.len() != 8 {
            return Err(format!("a done frame has {} fields, not 8", f.len()));
        }
        let text = String::from_utf8_lossy(&f[1]).into_owned();
        let ended = match f[0].as_slice() {
            b"code" => Ended::Code(text.parse().map_err(|_| format!("exit status {text:?}"))?),
            b"signal" => Ended::Signal(text.parse().map_err(|_| format!("signal {text:?}"))?),
            b"timeout" => Ended::Timeout,
            b"not-started" => Ended::NotStarted(text),
            k => return Err(format!("unknown end {:?}", String::from_utf8_lossy(k))),
        };
        Ok(Done {
            ended,
            wall_ns: number(&f[2], "wall time")?,
            startup_ns: if f[3].is_empty() {
                None
            } else {
                Some(number(&f[3], "start-up")?)
            },
            user_ns: number(&f[4], "user time")?,
            sys_ns: number(&f[5], "system time")?,
            max_rss_kib: number(&f[6], "peak RSS")?,
            stdout_bytes: number(&f[7], "output size")?,
        })
    }
}

fn number(b: &[u8], what: &str) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what} {:?} is not a number", String::from_utf8_lossy(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split_of_the_stream() {
        let exec = Exec {
            key: b"abc".to_vec(),
            timeout_ms: 5000,
            argv: vec![b"wl".to_vec(), b"getpid".to_vec(), vec![]],
            env: vec![b"A=1".to_vec()],
            out_cap: 7,
        };
        let done = Done {
            ended: Ended::Signal(9),
            wall_ns: 12,
            startup_ns: None,
            user_ns: 3,
            sys_ns: 4,
            max_rss_kib: 5,
            stdout_bytes: 6,
        };
        let mut stream = exec.encode();
        stream.extend(done.encode());
        stream.extend(encode(HALT, &[]));
        for cut in 0..stream.len() {
            let mut r = Reader::default();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                r.push(part);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(Exec::decode(&got[0].1).unwrap(), exec);
            assert_eq!(Done::decode(&got[1].1).unwrap(), done);
            assert_eq!((got[2].0, got[2].1.len()), (HALT, 0));
        }
    }

    #[test]
    fn garbage_and_bad_payloads_are_errors_that_say_what() {
        let mut r = Reader::default();
        r.push(b"Xhello");
        assert!(r.next_frame().unwrap_err().contains("58 68"));
        let mut r = Reader::default();
        r.push(b"boot noise VB");
        assert_eq!(r.skip_noise(), 11);
        r.push(&[b'H', 0, 0, 0, 0]);
        assert_eq!(r.next_frame().unwrap(), Some((b'H', vec![])));
        let mut r = Reader::default();
        r.push(&[b'V', b'B', b'P', 0xff, 0xff, 0xff, 0xff]);
        assert!(r.next_frame().unwrap_err().contains("announces"));
        assert!(fields(&[5, 0, 0, 0, 1]).unwrap_err().contains("5 bytes"));
        let bad = encode(EXEC, &[b"k", b"x", b"0", b"1", b"a"]);
        assert!(Exec::decode(&bad[7..]).unwrap_err().contains("timeout"));
        let few = encode(EXEC, &[b"k", b"0", b"0", b"3", b"a"]);
        assert!(Exec::decode(&few[7..]).unwrap_err().contains("3 arguments"));
        assert!(Done::decode(&encode(DONE, &[b"code"])[7..]).is_err());
    }
}
