# Shared by the demo and bench scripts: source it after `cd "$ROOT"`.

# Starts the services (installing what is missing) and builds the release
# binary; sets PULIH to its path. $1 names the caller in messages.
services_and_release_build() {
    deploy/local/services.sh up
    echo "$1: building pulih (release)" >&2
    cargo build --release --locked -q -p pulih
    PULIH="$ROOT/target/release/pulih"
}
