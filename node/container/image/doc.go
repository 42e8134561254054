// Package image builds container image archives in Go, with no registry,
// daemon or network: one layer from a list of files (or an fs.FS) plus an
// image config, written as an OCI image layout tarball (or a docker-save
// tarball) that containerd's import reads. The output is reproducible: the
// same inputs give the same digests.
//
// BusyboxImage packs the host's static /bin/busybox (Debian's
// busybox-static) with its applets as symlinks: the test image of Shoal.
//
// Functions are safe for concurrent use; each call owns what it writes.
package image
