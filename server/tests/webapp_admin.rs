//! The staff-only admin over HTTP: permissions for anonymous, non-staff and staff visitors,
//! creating and deactivating users, and SQL meta-characters in every kind of form field.

mod common;

use common::web::{Client, Database, POST_FORMS, location};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_for_staff_only() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let admin_gets = [
        "/admin/",
        "/admin/users/add/",
        "/admin/users/2/",
        "/admin/groups/",
    ];

    let mut anon = Client::new(&server.base());
    for path in admin_gets {
        let r = anon.get(path).await;
        assert_eq!(r.status, 302, "{path}");
        assert!(
            location(&r).starts_with("/accounts/login/?next="),
            "{path}: {}",
            location(&r)
        );
    }

    let mut john = Client::new(&server.base());
    john.login("john", "secret", "/chat/").await;
    for path in admin_gets {
        assert_eq!(john.get(path).await.status, 403, "GET {path} as john");
    }
    john.get("/chat/").await;
    for (path, fields) in POST_FORMS.iter().filter(|(p, _)| p.starts_with("/admin/")) {
        let r = john.post(path, fields).await;
        assert_eq!(r.status, 403, "POST {path} as john (valid token)");
    }

    // Staff: create a user in a group; that user can log in and is in the group.
    let mut admin = Client::new(&server.base());
    admin.login("admin", "secret", "/admin/").await;
    let form = admin.get("/admin/users/add/").await;
    assert!(form.body.contains("value=\"chatusers\""));
    let r = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "carol"),
                ("password", "carol-pw"),
                ("first_name", "Carol"),
                ("is_active", "on"),
                ("groups", "chatusers"),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert!(location(&r).ends_with("/?done=created"));
    let r = admin
        .post(
            "/admin/users/add/",
            &[("username", "carol"), ("password", "x")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("already taken"), "{}", r.body);

    let mut carol = Client::new(&server.base());
    let r = carol.login("carol", "carol-pw", "/groupchat/").await;
    assert_eq!((r.status, location(&r)), (302, "/groupchat/"));
    let key = &carol.cookies["sessionid"];
    let record = server
        .redis
        .as_ref()
        .unwrap()
        .cli(&["GET", &format!("wsredis:session:{key}")]);
    assert!(record.contains("\"groups\":[\"chatusers\"]"), "{record}");
    assert_eq!(carol.get("/admin/").await.status, 403, "carol is not staff");

    // Deactivated: no more logins.
    let users = admin.get("/admin/").await;
    let id = users
        .body
        .split("href=\"/admin/users/")
        .find_map(|s| s.split_once("/\">carol<").map(|(id, _)| id.to_owned()))
        .expect("carol is listed");
    admin.get(&format!("/admin/users/{id}/")).await;
    let r = admin
        .post(&format!("/admin/users/{id}/deactivate/"), &[])
        .await;
    assert_eq!(r.status, 302);
    let r = Client::new(&server.base())
        .login("carol", "carol-pw", "/")
        .await;
    assert!(
        r.body
            .contains("Please enter a correct username and password")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_meta_characters_are_just_text() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let mut probe = Client::new(&server.base());
    let r = probe.login("admin' OR '1'='1", "' OR ''='", "/").await;
    assert!(
        r.body
            .contains("Please enter a correct username and password")
    );
    let r = probe.login("admin'--", "x", "/").await;
    assert!(
        r.body
            .contains("Please enter a correct username and password")
    );

    let mut admin = Client::new(&server.base());
    admin.login("admin", "secret", "/admin/").await;
    admin.get("/admin/users/add/").await;
    let evil_name = "Robert'); DROP TABLE users;--";
    let r = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "bobby"),
                ("password", "pw"),
                ("first_name", evil_name),
                ("last_name", "\"<b>O'Hara</b>\\"),
                ("email", "x'@example.org"),
                ("is_active", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let r = admin
        .post(
            "/admin/users/add/",
            &[("username", "a'; DROP TABLE users;--"), ("password", "p")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("may contain only letters, digits"),
        "{}",
        r.body
    );
    admin.get("/admin/groups/").await;
    let r = admin
        .post(
            "/admin/groups/add/",
            &[("name", "g'; DELETE FROM groups;--")],
        )
        .await;
    assert_eq!(r.status, 302);

    let list = admin.get("/admin/").await;
    for user in ["admin", "john", "mary", "bobby"] {
        assert!(
            list.body.contains(&format!("\">{user}</a>")),
            "{user} listed: {}",
            list.body
        );
    }
    assert!(
        list.body.contains("Robert&#39;); DROP TABLE users;--"),
        "{}",
        list.body
    );
    assert!(!list.body.contains("<b>O"), "names are escaped in HTML");
    let groups = admin.get("/admin/groups/").await;
    assert!(groups.body.contains("g&#39;; DELETE FROM groups;--"));
    assert!(groups.body.contains("value=\"chatusers\""));
    assert_eq!(
        Client::new(&server.base())
            .login("bobby", "pw", "/")
            .await
            .status,
        302
    );
}
