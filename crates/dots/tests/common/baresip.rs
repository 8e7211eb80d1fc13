//! Driving baresip, a SIP phone we did not write, through its ctrl_tcp module:
//! netstring-framed JSON, one connection at a time, events such as REGISTER_OK,
//! CALL_ESTABLISHED and CALL_CLOSED pushed to it, commands such as `dial`.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// A running baresip, stopped on drop; its log and events are printed if the
/// test fails.
pub struct Baresip {
    child: Option<Child>,
    pub dir: PathBuf,
    ctrl_port: u16,
    ctrl: Option<TcpStream>,
    /// Kept open so that stdio.so does not read end-of-file.
    _stdin: Option<std::process::ChildStdin>,
    /// user@host of the account.
    pub aor: String,
    events: Option<Receiver<String>>,
    pub seen: Vec<String>,
}

impl Baresip {
    /// Writes a config and an account for `user` (password `password`) at
    /// `node`, auto-answering calls, audio on null devices, everything bound
    /// to 127.0.0.1, and starts baresip.
    pub fn start(node: &Node, user: &str, password: &str) -> Baresip {
        Baresip::start_with_contacts(node, user, password, &[])
    }

    /// Like `start`, with entries for baresip's contact list (`contact.so`): the
    /// first one is the current contact, the target of the `message` command.
    pub fn start_with_contacts(
        node: &Node,
        user: &str,
        password: &str,
        contacts: &[&str],
    ) -> Baresip {
        require("baresip", "baresip");
        let dir = scratch_dir("baresip");
        let sip_port = free_port();
        let ctrl_port = free_port();
        let rtp = free_port();
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t{LOCALHOST}:{sip_port}\n\
             call_local_timeout\t30\n\
             call_max_calls\t\t4\n\
             audio_player\t\talsa,null\n\
             audio_alert\t\talsa,null\n\
             audio_source\t\talsa,null\n\
             audio_buffer\t\t200\n\
             rtp_ports\t\t{rtp}-{}\n\
             rtcp_mux\t\tno\n\
             jitter_buffer_delay\t5-10\n\
             net_interface\t\t{LOCALHOST}\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tctrl_tcp.so\n\
             module\t\t\tstdio.so\n\
             ctrl_tcp_listen\t\t{LOCALHOST}:{ctrl_port}\n\
             module\t\t\tg711.so\n\
             module\t\t\talsa.so\n\
             module_tmp\t\tuuid.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tcontact.so\n",
            rtp + 20
        );
        fs::write(dir.join("config"), config).expect("write baresip config");
        let account = format!(
            "<sip:{user}@{LOCALHOST}>;outbound=\"sip:{}\";auth_pass={password};\
             regint=300;answermode=auto;audio_codecs=PCMU\n",
            node.sip_addr()
        );
        fs::write(dir.join("accounts"), account).expect("write baresip accounts");
        let contacts: String = contacts.iter().map(|c| format!("{c}\n")).collect();
        fs::write(dir.join("contacts"), contacts).expect("write baresip contacts");
        let log = fs::File::create(dir.join("baresip.log")).expect("baresip log");
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            // stdio.so prints incoming messages; its input stays open, unused.
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn baresip");
        let stdin = child.stdin.take();
        let mut b = Baresip {
            child: Some(child),
            dir,
            ctrl_port,
            aor: format!("{user}@{LOCALHOST}"),
            events: None,
            seen: Vec::new(),
            ctrl: None,
            _stdin: stdin,
        };
        b.connect_ctrl();
        b
    }

    /// Connects to ctrl_tcp (retrying while baresip starts up) and forwards
    /// every netstring it sends to a channel.
    pub fn connect_ctrl(&mut self) {
        let addr = format!("{LOCALHOST}:{}", self.ctrl_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            if let Ok(s) = TcpStream::connect(&addr) {
                break s;
            }
            let exited = self
                .child
                .as_mut()
                .map(|c| !matches!(c.try_wait(), Ok(None)))
                .unwrap_or(true);
            assert!(
                !exited && Instant::now() < deadline,
                "baresip's ctrl_tcp at {addr} never came up:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        };
        self.ctrl = Some(stream.try_clone().expect("ctrl_tcp stream"));
        let (tx, rx) = channel();
        thread::spawn(move || {
            let mut s = stream;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                // netstrings: LEN ":" DATA ","
                while let Some(colon) = buf.iter().position(|&b| b == b':') {
                    let Ok(len) = std::str::from_utf8(&buf[..colon])
                        .unwrap_or("")
                        .trim()
                        .parse::<usize>()
                    else {
                        buf.clear();
                        break;
                    };
                    if buf.len() < colon + 1 + len + 1 {
                        break;
                    }
                    let msg =
                        String::from_utf8_lossy(&buf[colon + 1..colon + 1 + len]).into_owned();
                    buf.drain(..colon + 1 + len + 1);
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
        });
        self.events = Some(rx);
    }

    /// Waits for an event of type `ty`; panics on `fail_on` or at the timeout.
    pub fn wait_event(&mut self, ty: &str, fail_on: &[&str], timeout: Duration) -> String {
        let want = format!("\"type\":\"{ty}\"");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let rx = self.events.as_ref().expect("ctrl_tcp connected");
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(ev) => {
                    self.seen.push(ev.clone());
                    if ev.contains(&want) {
                        return ev;
                    }
                    if let Some(bad) = fail_on
                        .iter()
                        .find(|f| ev.contains(&format!("\"type\":\"{f}\"")))
                    {
                        panic!("baresip reported {bad} while waiting for {ty}: {ev}");
                    }
                }
                Err(_) => panic!(
                    "no {ty} event from baresip within {timeout:?}; events so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until baresip reports its registration: the REGISTER_OK event,
    /// or (should the event have been sent before ctrl_tcp was connected)
    /// the "200 OK" line it logs for the account.
    pub fn wait_registered(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let rx = self.events.as_ref().expect("ctrl_tcp connected");
            if let Ok(ev) = rx.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(ev.clone());
                if ev.contains("\"type\":\"REGISTER_OK\"") {
                    return;
                }
                assert!(
                    !ev.contains("\"type\":\"REGISTER_FAIL\""),
                    "baresip failed to register: {ev}"
                );
            }
            if self
                .log()
                .lines()
                .any(|l| l.contains(&format!("{}: {{", self.aor)) && l.contains("} 200 OK"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "baresip did not register within {timeout:?}; events:\n{}",
                self.seen.join("\n")
            );
        }
    }

    /// Sends a command (as typed at baresip's prompt, without the slash) with
    /// its parameter, e.g. `("dial", "sip:bob@example.org")`.
    pub fn command(&mut self, command: &str, params: &str) {
        let json = format!(
            "{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"t{}\"}}",
            self.seen.len()
        );
        let frame = format!("{}:{json},", json.len());
        self.ctrl
            .as_mut()
            .expect("ctrl_tcp connected")
            .write_all(frame.as_bytes())
            .expect("write to ctrl_tcp");
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
        if thread::panicking() {
            eprintln!(
                "----- baresip ({}) events -----\n{}\n----- baresip log -----\n{}",
                self.dir.display(),
                self.seen.join("\n"),
                tail(&self.log(), 20_000)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
