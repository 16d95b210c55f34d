# Image builds for scripts/docker-engine.sh (sourced by it; needs ROOT, STATE, SUITE, the image
# names and DOCKER_HOST). Each image carries a `mina.inputs` label: the hash of what it was built
# from; `images` builds an image only when it is missing or its inputs changed.

# The URIs apt uses here for <suite> (deb822 .sources and one-line .list files).
apt_uris() {  # suite
    local suite="$1" file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$file" ]] || continue
        awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == s) print $i }' "$file"
    done
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$file" ]] || continue
        awk -v s="$suite" 'function flush() { if (deb && hit) for (u in uris) print u; deb = 0; hit = 0; delete uris }
            /^[[:space:]]*$/ { flush(); next }
            /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            /^URIs:/ { for (i = 2; i <= NF; i++) uris[$i] = 1 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
            END { flush() }' "$file"
    done
}

debian_mirror() {
    if [[ -n "${MMA_DEBIAN_MIRROR:-}" ]]; then echo "$MMA_DEBIAN_MIRROR"; return; fi
    local uri
    uri="$(apt_uris "$SUITE" | head -n 1)"
    echo "${uri:-http://deb.debian.org/debian}"
}

inputs_label() { docker image inspect --format '{{ index .Config.Labels "mina.inputs" }}' "$1" 2>/dev/null || true; }

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

proxy_args() {
    local name
    for name in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
        [[ -n "${!name:-}" ]] && printf '%s\n' --build-arg "$name=${!name}"
    done
    return 0
}

# The configuration the base image takes from this machine, written into $1/etc: the CA bundle
# (a TLS-inspecting proxy's CA included), the Debian sources, apt's proxy/validity options and
# pip's index, so apt and pip inside builds reach what they reach here.
host_config() {  # rootfs-overlay dir
    local out="$1" mirror security file
    mirror="$(debian_mirror)"
    security="$(apt_uris "$SUITE-security" | head -n 1)"
    mkdir -p "$out/etc/ssl/certs" "$out/usr/local/share/ca-certificates" "$out/etc/apt/apt.conf.d" \
        "$out/etc/dpkg/dpkg.cfg.d" "$out/usr/lib/ssl"
    cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
    # update-ca-certificates (the ca-certificates package, if an image adds it) keeps these.
    cp /etc/ssl/certs/ca-certificates.crt "$out/usr/local/share/ca-certificates/host-bundle.crt"
    {
        echo "deb $mirror $SUITE main"
        echo "deb $mirror $SUITE-updates main"
        [[ -n "$security" ]] && echo "deb $security $SUITE-security main"
    } >"$out/etc/apt/sources.list"
    for file in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
        [[ -f "$file" ]] || continue
        if grep -qiE 'proxy|Check-Valid-Until|Check-Date|Acquire::https?::' "$file"; then
            cp "$file" "$out/etc/apt/apt.conf.d/50host-$(basename "$file")"
        fi
    done
    cat >"$out/etc/apt/apt.conf.d/90mina-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
    # No fsync per unpacked file: an image build that dies is thrown away anyway.
    echo "force-unsafe-io" >"$out/etc/dpkg/dpkg.cfg.d/10mina-unsafe-io"
    cat >"$out/etc/dpkg/dpkg.cfg.d/90mina-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    local index extra trusted
    # Only network indexes: file:// ones and paths are this machine's disk, not the image's.
    index="$(remote_urls "${PIP_INDEX_URL:-$(pip_conf_value index-url)}")"
    extra="$(remote_urls "${PIP_EXTRA_INDEX_URL:-$(pip_conf_value extra-index-url)}")"
    trusted="${PIP_TRUSTED_HOST:-$(pip_conf_value trusted-host)}"
    {
        echo "[global]"
        echo "cert = /etc/ssl/certs/ca-certificates.crt"
        [[ -n "$index" ]] && echo "index-url = $index"
        [[ -n "$extra" ]] && echo "extra-index-url = $extra"
        [[ -n "$trusted" ]] && echo "trusted-host = $trusted"
        true
    } >"$out/etc/pip.conf"
}

remote_urls() {  # the http(s) URLs among a space-separated list
    local url out=()
    for url in $1; do
        [[ "$url" =~ ^https?:// ]] && out+=("$url")
    done
    echo "${out[*]}"
}

pip_conf_value() {  # key: from the machine's pip config files, last one wins
    local file value=""
    for file in /etc/pip.conf /etc/xdg/pip/pip.conf "${XDG_CONFIG_HOME:-$HOME/.config}/pip/pip.conf" "$HOME/.pip/pip.conf"; do
        [[ -r "$file" ]] || continue
        local found
        found="$(awk -v k="$1" '{ key = $0; sub(/=.*/, "", key); gsub(/[[:space:]]/, "", key)
            if (key == k) { line = $0; sub(/^[^=]*=[[:space:]]*/, "", line); print line } }' "$file" | tail -n 1)"
        [[ -n "$found" ]] && value="$found"
    done
    echo "$value"
}

build_base() {
    local work="$STATE/build/base" inputs
    rm -rf "$work"
    mkdir -p "$work/overlay"
    host_config "$work/overlay"
    inputs="$(cd "$work/overlay" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
    if [[ "$(inputs_label "$BASE_IMAGE")" == "$inputs" ]]; then
        rm -rf "$work"
        say "$BASE_IMAGE is up to date"
        return
    fi
    local mirror start=$SECONDS
    mirror="$(debian_mirror)"
    say "building $BASE_IMAGE: debootstrap --variant=minbase $SUITE from $mirror"
    # dpkg inside debootstrap reads the target's dpkg.cfg.d: unsafe-io and the slim excludes from the start.
    mkdir -p "$work/rootfs/etc/dpkg"
    cp -a "$work/overlay/etc/dpkg/dpkg.cfg.d" "$work/rootfs/etc/dpkg/"
    if ! debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -n 20 "$work/debootstrap.log" >&2
        die "debootstrap failed (log: $work/debootstrap.log)"
    fi
    cp -a "$work/overlay/." "$work/rootfs/"
    ln -sf /etc/ssl/certs/ca-certificates.crt "$work/rootfs/usr/lib/ssl/cert.pem"
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* \
        "$work/rootfs/usr/share/doc/"* "$work/rootfs/usr/share/man/"* "$work/rootfs/usr/share/locale/"* \
        "$work/rootfs/var/log/"*.log "$work/rootfs/etc/hostname"
    tar --numeric-owner -C "$work/rootfs" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . \
        | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
            --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
            --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
            --change "LABEL mina.inputs=$inputs" \
            --change 'CMD ["bash"]' \
            - "$BASE_IMAGE" >/dev/null
    rm -rf "$work"
    say "built $BASE_IMAGE in $((SECONDS - start)) s"
}

build_nats() {
    local work="$STATE/build/nats" binary inputs start=$SECONDS
    binary="$(cd "$ROOT" && "$ROOT/.venv/bin/python" -c 'from libs.devinfra import nats_server_binary; print(nats_server_binary())')" \
        || die "no nats-server binary (make install puts it in .venv)"
    rm -rf "$work"
    mkdir -p "$work"
    cp "$binary" "$work/nats-server"
    cp "$ROOT/deploy/images/nats/Dockerfile" "$ROOT/deploy/images/nats/nats-server.conf" "$work/"
    inputs="$(hash_of "$work"/*)"
    if [[ "$(inputs_label "$NATS_IMAGE")" == "$inputs" ]]; then
        rm -rf "$work"
        say "$NATS_IMAGE is up to date"
        return
    fi
    say "building $NATS_IMAGE from $binary ($("$binary" --version))"
    docker build -q --network host --label "mina.inputs=$inputs" -t "$NATS_IMAGE" "$work" >/dev/null
    rm -rf "$work"
    say "built $NATS_IMAGE in $((SECONDS - start)) s"
}

build_postgres() {
    local dir="$ROOT/deploy/images/postgres" inputs start=$SECONDS
    inputs="$(hash_of "$dir"/* <(docker image inspect --format '{{.Id}}' "$BASE_IMAGE"))"
    if [[ "$(inputs_label "$POSTGRES_IMAGE")" == "$inputs" ]]; then
        say "$POSTGRES_IMAGE is up to date"
        return
    fi
    say "building $POSTGRES_IMAGE: Debian's postgresql on $BASE_IMAGE"
    local args=()
    mapfile -t args < <(proxy_args)
    docker build -q --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" "${args[@]}" \
        --label "mina.inputs=$inputs" -t "$POSTGRES_IMAGE" "$dir" >/dev/null
    say "built $POSTGRES_IMAGE in $((SECONDS - start)) s"
}

build_images() {
    local start=$SECONDS
    build_base
    build_nats
    build_postgres
    docker image prune -f --filter label=mina.inputs >/dev/null  # older builds' dangling layers
    say "images ready in $((SECONDS - start)) s:"
    local ref
    for ref in "$BASE_IMAGE" "$NATS_IMAGE" "$POSTGRES_IMAGE"; do
        say "  $(docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$ref")"
    done
}
