//! Exercises the whole library against a running cluster. Skipped unless
//! `FDFS_CLIENT_LIVE_CONF` names a client.conf whose trackers are up.

use fdfs_client::{Client, ClientConfig};
use fdfs_proto::fileid::FileKind;
use fdfs_proto::metadata::{OP_MERGE, OP_OVERWRITE};

fn pairs(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

#[tokio::test]
async fn everything_against_a_live_cluster() {
    let Ok(conf) = std::env::var("FDFS_CLIENT_LIVE_CONF") else {
        eprintln!("FDFS_CLIENT_LIVE_CONF not set: skipped");
        return;
    };
    let client = Client::new(&ClientConfig::load(&conf).unwrap());

    let master = client
        .upload_buffer(b"Hello FastDFS!\n", "txt", None)
        .await
        .unwrap();
    assert_eq!(
        client.download_to_vec(&master, 6, 7).await.unwrap(),
        b"FastDFS"
    );

    client
        .set_metadata(
            &master,
            OP_OVERWRITE,
            &pairs(&[("width", "160"), ("a", "1")]),
        )
        .await
        .unwrap();
    client
        .set_metadata(&master, OP_MERGE, &pairs(&[("width", "200")]))
        .await
        .unwrap();
    assert_eq!(
        client.get_metadata(&master).await.unwrap(),
        pairs(&[("a", "1"), ("width", "200")])
    );

    let slave = client
        .upload_slave_buffer(&master, "_big", "txt", b"bigger content")
        .await
        .unwrap();
    assert!(slave.ends_with("_big.txt"), "{slave}");
    let info = client.file_info(&slave, false).await.unwrap();
    assert!(info.get_from_server);
    assert_eq!(info.kind, FileKind::Slave);
    assert_eq!(info.file_size, 14);

    let app = client
        .upload_appender_buffer(b"0123456789", "log", None)
        .await
        .unwrap();
    client.append_buffer(&app, b"abc").await.unwrap();
    client.modify_buffer(&app, 2, b"XY").await.unwrap();
    client.truncate_file(&app, 11).await.unwrap();
    assert_eq!(
        client.download_to_vec(&app, 0, 0).await.unwrap(),
        b"01XY456789a"
    );
    let normal = client.regenerate_appender_filename(&app).await.unwrap();
    let info = client.file_info(&normal, true).await.unwrap();
    assert_eq!(info.file_size, 11);
    assert_eq!(info.crc32, crc32fast::hash(b"01XY456789a"));

    let stats = client.tracker().list_groups().await.unwrap();
    assert!(!stats.is_empty());
    let storages = client
        .tracker()
        .list_storages(&stats[0].group, None)
        .await
        .unwrap();
    assert!(!storages.is_empty());
    let all = client.tracker().query_fetch_all(&master).await.unwrap();
    assert!(!all.servers.is_empty());
    let store = client.tracker().query_store_all(None).await.unwrap();
    assert!(!store.servers.is_empty());

    for id in [&slave, &master, &normal] {
        client.delete_file(id).await.unwrap();
    }
    assert!(client.download_to_vec(&master, 0, 0).await.is_err());
}
