//! The ceiling for `scripts/bench.sh fetch`: a raw quinn bulk transfer between two processes
//! with the same TLS 1.3 / aws-lc-rs / transport settings popseed/1 uses, moving bytes from
//! memory to memory on STREAMS parallel streams (like the fetcher's streams per origin).
//!
//!   quic_ceiling server 127.0.0.1:0          prints "listening ADDR FINGERPRINT"
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
            let data = bytes::Bytes::from(vec![0x5au8; CHUNK]);
            while let Some(inc) = ep.accept().await {
                let data = data.clone();
                tokio::spawn(async move {
                    let Ok(conn) = inc.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let data = data.clone();
                        tokio::spawn(async move {
                            let Ok(req) = recv.read_to_end(64).await else { return };
                            let mut left = u64::from_be_bytes(req.try_into().unwrap_or([0; 8]));
                            while left > 0 {
                                let n = left.min(CHUNK as u64) as usize;
                                if send.write_chunk(data.slice(..n)).await.is_err() {
                                    return;
                                }
                                left -= n as u64;
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
            let cfg = tls::client_config(&Trust::Fingerprint(args[3].clone()))?;
            let total: u64 = args[4].parse()?;
            let streams: u64 = args[5].parse()?;
            let ep = popseed_origin::client::client_endpoint(addr)?;
            let conn = ep.connect_with(cfg, addr, "localhost")?.await?;
            let conn = Arc::new(conn);
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..streams {
                let conn = conn.clone();
                set.spawn(async move {
                    let (mut send, mut recv) = conn.open_bi().await?;
                    send.write_all(&(total / streams).to_be_bytes()).await?;
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
            ep.wait_idle().await;
        }
        _ => eprintln!("usage: quic_ceiling server ADDR | client ADDR FINGERPRINT BYTES STREAMS"),
    }
    Ok(())
}
