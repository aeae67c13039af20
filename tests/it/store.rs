use pulih_store::{MigrationStatus, Store, StoreConfig, MIGRATIONS};
use pulih_tests::store_config;

#[tokio::test]
async fn migrate_is_idempotent_and_recorded() {
    let store = Store::new(&store_config("migrate"));
    assert!(matches!(
        store.migration_status().await.unwrap()[0],
        MigrationStatus::Pending { .. }
    ));
    let first = store.migrate().await.unwrap();
    assert_eq!(first.len(), MIGRATIONS.len());
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "second run applies nothing"
    );
    let status = store.migration_status().await.unwrap();
    assert!(
        status
            .iter()
            .all(|s| matches!(s, MigrationStatus::Applied { .. })),
        "{status:?}"
    );
    // The table is there and empty.
    assert!(store.activity_rows().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stopped_server_gives_an_error_naming_the_address() {
    let store = Store::new(&StoreConfig {
        url: "http://127.0.0.1:1".into(),
        database: "pulih".into(),
        user: "default".into(),
        password: String::new(),
    });
    let e = store.ping().await.unwrap_err().to_string();
    assert!(e.contains("http://127.0.0.1:1"), "{e}");
    assert!(e.contains("services.sh up"), "{e}");
}
