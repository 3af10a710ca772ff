#!/usr/bin/env python3
"""The two steps of scripts/images.sh that no Debian tool does as needed.

  oci.py layer OUT.tar EPOCH BINARY EXTRA_DIRS   # one reproducible image layer
  oci.py rootfs OUT.tar EPOCH DIR                # a prepared directory as one reproducible image layer
  oci.py archive LAYOUT_DIR REF OUT.tar          # an OCI layout as one archive, named REF

`layer` writes the root filesystem as an uncompressed tar with fixed timestamps and explicit owners (root, and
UID/GID 65532 for the non-root user's home and for each directory in the comma-separated EXTRA_DIRS), so that no
privileged chown or fakeroot is needed and the same inputs give the same digest.

`rootfs` does the same for a directory the caller laid out (files, directories and symbolic links, owned by
root, modes kept), and adds /etc/passwd, /etc/group (root and the non-root user) and a writable /tmp.

`archive` names the image REF in index.json (the `org.opencontainers.image.ref.name` and
`io.containerd.image.name` annotations, which `ctr images import` reads) and adds a Docker-style manifest.json
beside the OCI layout (which `crane push` and `docker load` read), then writes the layout as one tar.
"""
import io
import json
import os
import sys
import tarfile

NONROOT = 65532


def layer(out, epoch, binary, extra_dirs):
    mtime = int(epoch)

    def add(tar, name, kind, mode, uid=0, data=None):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid = info.gid = uid
        info.uname = info.gname = ""
        info.mtime = mtime
        if data is not None:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            tar.addfile(info)

    with open(binary, "rb") as f:
        exe = f.read()
    ca = "/etc/ssl/certs/ca-certificates.crt"
    with open(ca, "rb") as f:
        bundle = f.read()
    passwd = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
    group = b"root:x:0:\nnonroot:x:65532:\n"
    entries = [
        ("etc", tarfile.DIRTYPE, 0o755, 0, None),
        ("etc/group", tarfile.REGTYPE, 0o644, 0, group),
        ("etc/passwd", tarfile.REGTYPE, 0o644, 0, passwd),
        ("etc/ssl", tarfile.DIRTYPE, 0o755, 0, None),
        ("etc/ssl/certs", tarfile.DIRTYPE, 0o755, 0, None),
        ("etc/ssl/certs/ca-certificates.crt", tarfile.REGTYPE, 0o644, 0, bundle),
        ("home", tarfile.DIRTYPE, 0o755, 0, None),
        ("home/nonroot", tarfile.DIRTYPE, 0o700, NONROOT, None),
        ("tmp", tarfile.DIRTYPE, 0o1777, 0, None),
        ("usr", tarfile.DIRTYPE, 0o755, 0, None),
        ("usr/local", tarfile.DIRTYPE, 0o755, 0, None),
        ("usr/local/bin", tarfile.DIRTYPE, 0o755, 0, None),
        ("usr/local/bin/" + os.path.basename(binary), tarfile.REGTYPE, 0o755, 0, exe),
    ]
    for d in filter(None, extra_dirs.split(",")):
        entries.append((d, tarfile.DIRTYPE, 0o755, NONROOT, None))
    entries.sort(key=lambda e: e[0])
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, mode, uid, data in entries:
            add(tar, name, kind, mode, uid, data)


def rootfs(out, epoch, root):
    mtime = int(epoch)
    passwd = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n"
    group = b"root:x:0:\nnonroot:x:65532:\n"
    extra = {
        "etc": (tarfile.DIRTYPE, 0o755, None),
        "etc/group": (tarfile.REGTYPE, 0o644, group),
        "etc/passwd": (tarfile.REGTYPE, 0o644, passwd),
        "tmp": (tarfile.DIRTYPE, 0o1777, None),
    }
    names = set(extra)
    for base, dirs, files in os.walk(root):
        for n in dirs + files:
            names.add(os.path.relpath(os.path.join(base, n), root))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            if name in extra:
                kind, mode, data = extra[name]
                info = tarfile.TarInfo(name)
                info.type, info.mode = kind, mode
                if data is not None:
                    info.size = len(data)
            else:
                data = None
                info = tar.gettarinfo(os.path.join(root, name), arcname=name)
                if info.isreg():
                    with open(os.path.join(root, name), "rb") as f:
                        data = f.read()
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def archive(layout, ref, out):
    index_path = os.path.join(layout, "index.json")
    with open(index_path) as f:
        index = json.load(f)
    if len(index.get("manifests", [])) != 1:
        sys.exit(f"{layout}: expected one image in the layout, found {len(index.get('manifests', []))}")
    desc = index["manifests"][0]
    desc.setdefault("annotations", {})
    desc["annotations"]["org.opencontainers.image.ref.name"] = ref
    desc["annotations"]["io.containerd.image.name"] = ref
    with open(index_path, "w") as f:
        json.dump(index, f, separators=(",", ":"))

    def blob(digest):
        return "blobs/" + digest.replace(":", "/", 1)

    with open(os.path.join(layout, blob(desc["digest"]))) as f:
        manifest = json.load(f)
    docker = [{
        "Config": blob(manifest["config"]["digest"]),
        "RepoTags": [ref],
        "Layers": [blob(layer["digest"]) for layer in manifest["layers"]],
    }]
    with open(os.path.join(layout, "manifest.json"), "w") as f:
        json.dump(docker, f, separators=(",", ":"))

    def normalize(info):
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with tarfile.open(out + ".tmp", "w", format=tarfile.PAX_FORMAT) as tar:
        for top in ["oci-layout", "index.json", "manifest.json"]:
            tar.add(os.path.join(layout, top), arcname=top, filter=normalize)
        blobs = os.path.join(layout, "blobs")
        for root, dirs, files in os.walk(blobs):
            dirs.sort()
            rel = os.path.relpath(root, layout)
            tar.add(root, arcname=rel, recursive=False, filter=normalize)
            for name in sorted(files):
                tar.add(os.path.join(root, name), arcname=os.path.join(rel, name), filter=normalize)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "layer":
        layer(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "rootfs":
        rootfs(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "archive":
        archive(*sys.argv[2:])
    else:
        sys.exit(__doc__)
