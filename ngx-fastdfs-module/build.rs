// Passes nginx's build directory on (so scripts can find the vendored nginx binary) and
// turns nginx-sys's feature list into cfgs.
fn main() {
    if let Ok(dir) = std::env::var("DEP_NGINX_BUILD_DIR") {
        println!("cargo::rustc-env=NGX_FASTDFS_NGINX_BUILD_DIR={dir}");
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
}
