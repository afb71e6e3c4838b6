//! A TCP proxy on loopback that can cut every connection through it at once — a network cut as the
//! peers see it (both ends get a reset or EOF mid-stream), while the server behind it keeps running.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Forwards `127.0.0.1:<port>` to a target port.
pub struct CutProxy {
    pub port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl CutProxy {
    /// Starts forwarding to `127.0.0.1:<target>`.
    pub fn start(target: u16) -> CutProxy {
        CutProxy::start_on(0, target)
    }

    /// Starts forwarding `127.0.0.1:<port>` (0: any free port) to `127.0.0.1:<target>`.
    pub fn start_on(port: u16, target: u16) -> CutProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (open2, stop2) = (Arc::clone(&open), Arc::clone(&stop));
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = incoming else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let clones = (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone());
                let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else { continue };
                open2.lock().unwrap_or_else(|p| p.into_inner()).extend([c2, s2]);
                std::thread::spawn(move || pipe(client, s1));
                std::thread::spawn(move || pipe(server, c1));
            }
        });
        CutProxy { port, open, stop }
    }

    /// Connections accepted since the last cut (a closed one still counts until the next cut).
    pub fn connections(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len() / 2
    }

    /// Cuts every connection open right now; new connections are accepted again at once.
    pub fn cut(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.len() / 2;
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        n
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
