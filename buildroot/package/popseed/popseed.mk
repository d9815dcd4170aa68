################################################################################
#
# popseed
#
################################################################################

POPSEED_SITE = $(BR2_EXTERNAL_POPSEED_PATH)/..
POPSEED_SITE_METHOD = local
POPSEED_LICENSE = Apache-2.0
POPSEED_SUBDIR = appliance/popseed
POPSEED_USERS = popseed 480 popseed 480 * /var/lib/popseed - - popseed appliance agent

# Only the source: no build output, test artifacts or the Buildroot tree itself.
POPSEED_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=/target --exclude=/out --exclude=/buildroot --exclude=/tests \
	--exclude=/image --exclude=node_modules

# The vendoring trap: cargo-package vendors crates in its download post-process, which never
# runs for SITE_METHOD = local, so `cargo build --offline` would find no crates. Vendor them
# right after each rsync instead (this needs the network, like any download step) and point
# cargo at the vendor directory, as the download post-process does for tarball sources.
define POPSEED_VENDOR_CRATES
	mkdir -p $(@D)/.cargo $(BR_CARGO_HOME)
	cd $(@D) && CARGO_HOME=$(BR_CARGO_HOME) \
		$(HOST_DIR)/bin/cargo vendor --manifest-path Cargo.toml --locked VENDOR \
		> $(@D)/.cargo/config.toml.new
	mv $(@D)/.cargo/config.toml.new $(@D)/.cargo/config.toml
endef
POPSEED_POST_RSYNC_HOOKS += POPSEED_VENDOR_CRATES

$(eval $(cargo-package))

# The vendoring hook runs host cargo at rsync time, before the package's build dependencies
# are otherwise guaranteed to be built.
$(POPSEED_TARGET_RSYNC): | host-rustc
