"""The payload format: what a llamabin file carries and how to find it.

Shared by the packer (`packager`) and the runtime (`chat`), which import
this package and never each other. Standard library only: the runtime
imports it from inside the frozen app.

* `payload.footer`: the 64-byte footer, alignment, the manifest area;
* `payload.manifest`: the manifest's encoding and schema;
* `payload.flags`: the runtime flags a file may carry as defaults;
* `payload.find`: finding a file's payload (inside it, or in its sidecar);
* `payload.errors`: the error base classes and exit codes of both commands.

See docs/payload-layout.md.
"""
