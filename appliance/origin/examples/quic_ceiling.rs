//! The ceiling for `scripts/bench.sh fetch`: a raw quinn bulk transfer between two processes
//! with the same TLS 1.3 / aws-lc-rs / transport settings popseed/1 uses, moving bytes from
//! memory to memory on STREAMS parallel streams (like the fetcher's streams per origin).
//!
//! With FILE, the server reads FILE into memory before listening and sends its bytes (the same
//! bytes a fill moves, each one sent once); without, it sends one 1 MiB buffer over and over
//! (which stays in the CPU cache, so it is the higher ceiling).
//!
//!   quic_ceiling server 127.0.0.1:0 [FILE]   prints "listening ADDR FINGERPRINT"
//!   quic_ceiling client ADDR FINGERPRINT BYTES STREAMS   prints "MiB/s X"

use std::sync::Arc;
use std::time::Instant;

use popseed_origin::{tls, Identity, Trust};

const CHUNK: usize = 1 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => {
            let id = Identity::self_signed(&["localhost".into()])?;
            let fp = id.fingerprint();
            let ep = quinn::Endpoint::server(tls::server_config(id, 64)?, args[2].parse()?)?;
            println!("listening {} {fp}", ep.local_addr()?);
            let data = match args.get(3) {
                Some(path) => bytes::Bytes::from(std::fs::read(path)?),
                None => bytes::Bytes::from(vec![0x5au8; CHUNK]),
            };
            if data.is_empty() {
                return Err("empty file".into());
            }
            while let Some(inc) = ep.accept().await {
                let data = data.clone();
                tokio::spawn(async move {
                    let Ok(conn) = inc.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let data = data.clone();
                        tokio::spawn(async move {
                            let Ok(req) = recv.read_to_end(64).await else { return };
                            let (Ok(at), Ok(len)) =
                                (req[..8.min(req.len())].try_into(), req[8.min(req.len())..].try_into())
                            else {
                                return;
                            };
                            // the bytes at [at, at + len) of the data, wrapping around at its end
                            let (mut at, mut left) =
                                (u64::from_be_bytes(at) as usize % data.len(), u64::from_be_bytes(len));
                            while left > 0 {
                                let n = (left.min(CHUNK as u64) as usize).min(data.len() - at);
                                if send.write_chunk(data.slice(at..at + n)).await.is_err() {
                                    return;
                                }
                                left -= n as u64;
                                at = (at + n) % data.len();
                            }
                            let _ = send.finish();
                            let _ = send.stopped().await;
                        });
                    }
                });
            }
        }
        Some("client") => {
            let addr = args[2].parse()?;
            tls::warm_up();
            let spec = popseed_origin::OriginSpec {
                name: "ceiling".into(),
                addr,
                server_name: "localhost".into(),
                trust: Trust::Fingerprint(args[3].clone()),
            };
            let total: u64 = args[4].parse()?;
            let streams: u64 = args[5].parse()?;
            // the same connect sequence (TLS settings, endpoint) as the fetcher's
            let connector = popseed_origin::OriginConnector::pieces(spec, popseed_origin::DEFAULT_CONNECT_TIMEOUT)?;
            let conn = connector.connect_raw().await?;
            let conn = Arc::new(conn);
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..streams {
                let conn = conn.clone();
                set.spawn(async move {
                    let (mut send, mut recv) = conn.open_bi().await?;
                    let share = total / streams;
                    send.write_all(&[(i * share).to_be_bytes(), share.to_be_bytes()].concat()).await?;
                    send.finish()?;
                    let mut got = 0u64;
                    while let Some(c) = recv.read_chunk(CHUNK, true).await? {
                        got += c.bytes.len() as u64;
                    }
                    Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(got)
                });
            }
            let mut got = 0;
            while let Some(r) = set.join_next().await {
                got += r?.map_err(|e| e.to_string())?;
            }
            let secs = t.elapsed().as_secs_f64();
            println!("MiB/s {:.1} bytes {got} secs {secs:.3}", got as f64 / (1 << 20) as f64 / secs);
            conn.close(0u32.into(), b"done");
            connector.wait_idle().await;
        }
        _ => eprintln!("usage: quic_ceiling server ADDR [FILE] | client ADDR FINGERPRINT BYTES STREAMS"),
    }
    Ok(())
}
