//! The dashboard's login, CSRF and public-view rules over real HTTPS against a real `kho-hub`
//! (the browser test covers the pages in Chromium; this one checks what a browser hides: status
//! codes, cookies, refused forged requests).

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use kho_tests::bin_path;
use kho_tests::procs::HubProc;

const CATALOG: &str = "[[department]]\ncode = \"so_y_te\"\nname = \"Sở Y tế\"\n\
    contact = { name = \"Văn phòng Sở\", phone = \"0212 385 0010\" }\n\n\
    [[dataset]]\nid = \"ho_so\"\ntitle = \"Hồ sơ thủ tục hành chính\"\ndepartment = \"so_y_te\"\n\
    cadence = \"daily\"\nupdate_kind = \"sync\"\n";

struct Reply {
    status: u16,
    cookies: Vec<String>,
    location: Option<String>,
    csp: bool,
    body: String,
}

struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(hub: &HubProc) -> Client {
        let http = hub.client();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Client { rt, http, base: hub.url() }
    }

    fn send(&self, method: &str, path: &str, cookie: &str, form: Option<&str>) -> Reply {
        self.rt.block_on(async {
            let url = format!("{}{path}", self.base);
            let mut req = if method == "POST" { self.http.post(url) } else { self.http.get(url) };
            if !cookie.is_empty() {
                req = req.header("cookie", cookie);
            }
            if let Some(f) = form {
                req = req.header("content-type", "application/x-www-form-urlencoded").body(f.to_string());
            }
            let resp = req.send().await.unwrap();
            let h = resp.headers().clone();
            Reply {
                status: resp.status().as_u16(),
                cookies: h.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect(),
                location: h.get("location").map(|v| v.to_str().unwrap().to_string()),
                csp: h.contains_key("content-security-policy"),
                body: resp.text().await.unwrap(),
            }
        })
    }
}

fn hash_password(password: &str) -> String {
    let mut child = Command::new(bin_path("kho-hub"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

/// `name=value` of a Set-Cookie header named `name`.
fn cookie_pair(reply: &Reply, name: &str) -> String {
    let c = reply.cookies.iter().find(|c| c.starts_with(&format!("{name}="))).expect("cookie set");
    c.split(';').next().unwrap().to_string()
}

fn hub(tmp: &std::path::Path, public_view: bool) -> HubProc {
    let dir = tmp.join(format!("hub-{public_view}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("catalog.toml"), CATALOG).unwrap();
    let extra = format!(
        "\n[catalog]\npath = \"catalog.toml\"\n\n[dashboard]\npublic_view = {public_view}\n\
         [[dashboard.operator]]\nname = \"ioc\"\npassword_hash = \"{}\"\n",
        hash_password("bí mật")
    );
    HubProc::start_with(&dir, &[], &extra)
}

#[test]
fn login_sessions_and_csrf_guard_the_dashboard() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub(tmp.path(), false);
    let c = Client::new(&hub);

    // Closed without a session; the stylesheet comes from the binary.
    let r = c.send("GET", "/ui", "", None);
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/ui/login")));
    assert_eq!(c.send("GET", "/ui/fleet", "", None).status, 303);
    let css = c.send("GET", "/ui/static/kho.css", "", None);
    assert!(css.status == 200 && css.body.contains("--ok"), "{}", css.status);

    // A login post without the login form's cookie is refused (cross-site forgery).
    let forged = c.send("POST", "/ui/login", "", Some("name=ioc&password=b%C3%AD+m%E1%BA%ADt&csrf=abc"));
    assert_eq!(forged.status, 403);
    assert!(!forged.cookies.iter().any(|c| c.starts_with("kho_session=")));

    // The real form: a token in a cookie and the same in the page.
    let page = c.send("GET", "/ui/login", "", None);
    assert!(page.csp, "pages carry a Content-Security-Policy");
    let login_cookie = cookie_pair(&page, "kho_login_csrf");
    let token = hidden_csrf(&page.body);
    assert_eq!(login_cookie, format!("kho_login_csrf={token}"));
    let wrong = c.send("POST", "/ui/login", &login_cookie, Some(&format!("name=ioc&password=sai&csrf={token}")));
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Sai tên đăng nhập hoặc mật khẩu"));
    let ok = c.send(
        "POST",
        "/ui/login",
        &login_cookie,
        Some(&format!("name=ioc&password=b%C3%AD+m%E1%BA%ADt&csrf={token}")),
    );
    assert_eq!((ok.status, ok.location.as_deref()), (303, Some("/ui")));
    let set = ok.cookies.iter().find(|c| c.starts_with("kho_session=")).unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set.contains(attr), "session cookie lacks {attr}: {set}");
    }
    let session = cookie_pair(&ok, "kho_session");

    // Logged in: the board with contacts' phone numbers, and the fleet.
    let board = c.send("GET", "/ui", &session, None);
    assert_eq!(board.status, 200);
    assert!(board.body.contains("Hồ sơ thủ tục hành chính") && board.body.contains("0212 385 0010"));
    assert_eq!(c.send("GET", "/ui/fleet", &session, None).status, 200);
    let csrf = hidden_csrf(&board.body);

    // Logout needs the session's CSRF token.
    assert_eq!(c.send("POST", "/ui/logout", &session, Some("csrf=forged")).status, 403);
    assert_eq!(c.send("GET", "/ui", &session, None).status, 200, "a forged logout changes nothing");
    let out = c.send("POST", "/ui/logout", &session, Some(&format!("csrf={csrf}")));
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/ui/login")));
    assert_eq!(c.send("GET", "/ui", &session, None).status, 303, "the session is gone");
}

#[test]
fn the_public_view_is_read_only_and_hides_contacts_and_fleet() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub(tmp.path(), true);
    let c = Client::new(&hub);
    let board = c.send("GET", "/ui", "", None);
    assert_eq!(board.status, 200);
    assert!(board.body.contains("Hồ sơ thủ tục hành chính") && board.body.contains("Văn phòng Sở"));
    assert!(!board.body.contains("0212 385 0010"), "no phone numbers in the public view");
    assert!(!board.body.contains("/ui/fleet"), "no fleet link in the public view");
    assert_eq!(c.send("GET", "/ui/fleet", "", None).status, 303);
    assert_eq!(c.send("GET", "/ui/scenarios", "", None).status, 200);
    let en = c.send("GET", "/ui?lang=en", "", None);
    assert!(en.body.contains("<html lang=\"en\"") && en.body.contains("Never received"), "English on request");
    assert!(en.cookies.iter().any(|c| c.starts_with("kho_lang=en")));
    assert_eq!(c.send("GET", "/ui/datasets/khong_co", "", None).status, 404);
}
