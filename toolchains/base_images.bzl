"""Pinned base images: a module extension whose repositories hand the rules a base image by digest.

MODULE.bazel declares each OS once, with its base image variants: `base_images.os(name = "guestos",
variants = ["dev", "prod"])`. Every OS's base image is built from the shared
`//ic-os/components/base-image:Dockerfile.base` with its own package lists and lock, and each
pinned image is named by a pin file, `ic-os/<os>/context/docker-base.<variant>`, holding
`<name>@sha256:<manifest digest>`. The archive lives in a content-addressed OCI store
(`$ICOS_OCI_STORE`, default `$ICOS_CACHE_DIR/oci-store`, written by `icos base-image build`). A
repository links it in when the store has it; when it does not, the repository rule pulls it from
the registry `$ICOS_REGISTRY` by digest, else builds it (`icos base-image build --check-pin`, the
only step that reaches the Debian archive) and the result must be the pinned image. Image actions never use the network: they take the archive as an input
and check its digest (`pinned_image`).
"""

def _parse_pin(text, path):
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(lines) != 1 or "@sha256:" not in lines[0]:
        fail("{}: expected one line NAME@sha256:<64 hex digits>; fix it with ci/base-images/rebuild".format(path))
    name, hex = lines[0].split("@sha256:")
    if len(hex) != 64 or [c for c in hex.elems() if c not in "0123456789abcdef"]:
        fail("{}: {!r} is not a sha256 digest; fix it with ci/base-images/rebuild".format(path, hex))
    return name, "sha256:" + hex

def _icos_for_repository_rules(rctx, workspace, cache_dir):
    """The icos binary, built with cargo from this workspace: repository rules run before Bazel builds anything."""
    given = rctx.os.environ.get("ICOS_HOST_ICOS")
    if given:
        return given
    target_dir = cache_dir + "/tools/icos-target"
    result = rctx.execute(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", workspace + "/tools/Cargo.toml", "-p", "icos", "--bin", "icos"],
        environment = {"CARGO_TARGET_DIR": target_dir},
        timeout = 3600,
        quiet = False,
    )
    if result.return_code != 0:
        fail("icos base images: building icos with cargo failed:\n" + result.stderr)
    return target_dir + "/release/icos"

def _pinned_base_image_impl(rctx):
    pin = rctx.path(rctx.attr.pin)
    name, digest = _parse_pin(rctx.read(pin), pin)
    workspace = str(rctx.path(Label("//:MODULE.bazel")).dirname)
    cache_dir = rctx.os.environ.get("ICOS_CACHE_DIR", "/var/cache/icos")
    store = rctx.os.environ.get("ICOS_OCI_STORE", cache_dir + "/oci-store")
    archive = rctx.path("{}/sha256/{}.oci.tar".format(store, digest.removeprefix("sha256:")))
    registry = rctx.os.environ.get("ICOS_REGISTRY")
    if not archive.exists and registry:
        icos = _icos_for_repository_rules(rctx, workspace, cache_dir)
        rctx.report_progress("{} is not in {}: pulling it from {}".format(digest, store, registry))
        pulled = rctx.execute([icos, "oci", "pull", "--store", store, "--pin", str(pin)], timeout = 3600, quiet = False)
        if pulled.return_code != 0:
            print("icos base images: {}@{} could not be pulled from {}; rebuilding it:\n{}".format(name, digest, registry, pulled.stderr))
    if not archive.exists:
        icos = _icos_for_repository_rules(rctx, workspace, cache_dir)
        rctx.report_progress("{} is not in {}: building it from {}".format(digest, store, rctx.attr.dockerfile))
        result = rctx.execute(
            [
                icos,
                "base-image",
                "build",
                "--check-pin",
                "--context",
                str(pin.dirname),
                "--dockerfile",
                str(rctx.path(rctx.attr.dockerfile)),
                "--os",
                rctx.attr.os,
                "--variant",
                rctx.attr.variant,
                "--store",
                store,
            ],
            timeout = 3600,
            quiet = False,
        )
        if result.return_code != 0:
            fail("the pinned base image {}@{} ({}) is not in the store {} and could not be rebuilt:\n{}{}".format(
                name,
                digest,
                pin,
                store,
                result.stderr,
                "Re-pin with: ci/container/container-run.sh ci/base-images/rebuild",
            ))
    rctx.symlink(archive, "image.oci.tar")
    rctx.file("BUILD.bazel", """\
load("@icos//rules:defs.bzl", "pinned_image")

pinned_image(
    name = "image",
    archive = "image.oci.tar",
    digest = "{digest}",
    pin = "{pin}",
    reference = "{name}@{digest}",
    visibility = ["//visibility:public"],
)
""".format(digest = digest, name = name, pin = str(rctx.attr.pin)))

pinned_base_image = repository_rule(
    implementation = _pinned_base_image_impl,
    doc = "The base image a pin file names, from the OCI store (built first when missing).",
    attrs = {
        "pin": attr.label(mandatory = True, allow_single_file = True, doc = "The pin file, docker-base.<variant>."),
        "dockerfile": attr.label(mandatory = True, allow_single_file = True, doc = "The base image recipe, Dockerfile.base."),
        "os": attr.string(mandatory = True, doc = "The OS name, such as guestos."),
        "variant": attr.string(mandatory = True, values = ["dev", "prod"], doc = "The base image variant."),
    },
    environ = ["ICOS_CACHE_DIR", "ICOS_OCI_STORE", "ICOS_DEBIAN_MIRROR", "ICOS_REGISTRY", "ICOS_HOST_ICOS"],
)

def _hub_impl(rctx):
    rctx.file("BUILD.bazel", "".join([
        'alias(name = "{}", actual = "{}", visibility = ["//visibility:public"])\n'.format(name, actual)
        for name, actual in sorted(rctx.attr.images.items())
    ]))

_hub = repository_rule(
    implementation = _hub_impl,
    doc = "@icos_base_images: one alias per OS and variant, <os>-<variant>, to its pinned image.",
    attrs = {"images": attr.string_dict(doc = "Alias name -> the pinned image's label.")},
)

_os = tag_class(
    doc = "An OS whose base images are pinned: ic-os/<name>/context holds its package lists, locks and pins (docker-base.<variant>).",
    attrs = {
        "name": attr.string(mandatory = True, doc = "The OS, such as guestos."),
        "variants": attr.string_list(mandatory = True, doc = "Its base image variants (dev, prod)."),
    },
)

def _base_images_impl(module_ctx):
    hub = {}
    for module in module_ctx.modules:
        for os in module.tags.os:
            for variant in os.variants:
                repository = "{}_base_{}".format(os.name, variant)
                pinned_base_image(
                    name = repository,
                    pin = Label("//ic-os/{}/context:docker-base.{}".format(os.name, variant)),
                    dockerfile = Label("//ic-os/components/base-image:Dockerfile.base"),
                    os = os.name,
                    variant = variant,
                )
                hub["{}-{}".format(os.name, variant)] = "@{}//:image".format(repository)
    _hub(name = "icos_base_images", images = hub)

    # Not reproducible: a missing image is rebuilt with the host's cargo and the Debian archive.
    return module_ctx.extension_metadata(reproducible = False)

base_images = module_extension(
    implementation = _base_images_impl,
    doc = """Repositories of pinned base images, one set per OS (base_images.os), and the hub
@icos_base_images whose targets <os>-<variant> are the pinned images.""",
    tag_classes = {"os": _os},
)
