//! A PostgreSQL server of the test's own (initdb in a temporary directory, a free port), so a
//! test can stop and restart it. The binaries come from `pg_config --bindir` or
//! `/usr/lib/postgresql/<version>/bin`; as root they run as the `postgres` user.

use std::path::PathBuf;
use std::process::Command;

pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    running: bool,
    /// Server settings besides the port and socket (`-c ssl=on …`).
    options: String,
}

/// The certificates of [`PrivatePostgres::start_with_tls`]: the CA that signed the server's
/// certificate (for `sslrootcert`) and a CA that did not.
pub struct TestCerts {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
}

fn bindir() -> Option<PathBuf> {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"));
    from_config
        .into_iter()
        .chain(candidates)
        .find(|b| b.join("initdb").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PrivatePostgres {
    /// `None` (the test skips) only off CI when the PostgreSQL binaries are not installed.
    pub fn start() -> Option<Self> {
        let mut pg = Self::init()?;
        pg.restart();
        Some(pg)
    }

    /// A server that takes TLS connections only (`ssl = on`, plain TCP connections rejected
    /// by `pg_hba.conf`), its certificate for 127.0.0.1 and localhost signed by a CA of the test.
    pub fn start_with_tls() -> Option<(Self, TestCerts)> {
        let mut pg = Self::init()?;
        let tls = pg.dir.path().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        let certs = make_certs(&tls);
        std::fs::write(
            pg.dir.path().join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status();
            assert!(status.is_ok_and(|s| s.success()), "chown the TLS files to postgres");
        }
        pg.options = format!(
            "-c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
            tls.display()
        );
        pg.restart();
        Some((pg, certs))
    }

    /// initdb in a new directory, not started.
    fn init() -> Option<Self> {
        let Some(bin) = bindir() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL binaries are required under CI"
            );
            eprintln!("skipping: no initdb (PostgreSQL server binaries) installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self {
            bin,
            dir,
            port,
            running: false,
            options: String::new(),
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "chown the data directory to postgres"
            );
        }
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"]);
        Some(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start (again) on the same port and data, waiting until it accepts connections.
    pub fn restart(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-o", &options, "-l", &log, "-w", "start"]);
        self.running = true;
    }

    /// Stop at once (`-m immediate`: as a crash or a lost host looks to the hub).
    pub fn stop(&mut self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        self.running = false;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = Command::new(self.bin.join("pg_ctl"))
                .args(["-D", &data, "-m", "immediate", "stop"])
                .status();
            if is_root() {
                let program = self.bin.join("pg_ctl");
                let _ = Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(program)
                    .args(["-D", &data, "-m", "immediate", "stop"])
                    .status();
            }
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it (P-256 keys, two days),
/// and a second CA that signed nothing, made with the openssl command in `dir`.
fn make_certs(dir: &std::path::Path) -> TestCerts {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command is required for the TLS tests");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for name in ["ca", "other-ca"] {
        let (key_file, cert_file, subject) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN=gpuscout test {name}"),
        );
        let mut args = vec![
            "req", "-x509", "-days", "2", "-subj", &subject, "-keyout", &key_file, "-out", &cert_file,
        ];
        args.extend(key);
        args.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&args);
    }
    let mut args = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    args.extend(key);
    openssl(&args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    // PostgreSQL refuses a key file others may read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    TestCerts {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
    }
}
