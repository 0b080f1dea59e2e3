#!/usr/bin/perl
# Writes a cpio archive in the "newc" format (the one Linux unpacks as an
# initramfs, Documentation/driver-api/early-userspace/buffer-format.rst) to
# standard output, from:
#   - the paths read from standard input, one a line, relative to the
#     current directory (directories, regular files and symbolic links, as
#     lstat sees them), and
#   - the device nodes given as arguments, "PATH:MODE:c|b:MAJOR:MINOR"
#     (octal MODE, e.g. "dev/console:0600:c:5:1"), which need no mknod and
#     so no root.
# Every entry is owned by root (uid and gid 0) and dated 0, and inode
# numbers count up from 1 in input order, so the same tree gives the same
# bytes on any machine and for any user. Only perl-base is needed (a
# Debian essential package): no modules.
use strict;
use warnings;

my $ino = 0;

sub pad4 { my ($len) = @_; return "\0" x ((4 - $len % 4) % 4); }

# One entry: name, mode (type and permissions), data, nlink, rdev major/minor.
sub entry {
    my ($name, $mode, $data, $nlink, $rmaj, $rmin) = @_;
    $ino++;
    my $namez = "$name\0";
    my $header = sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
        $ino, $mode, 0, 0, $nlink, 0, length($data), 0, 0, $rmaj, $rmin,
        length($namez), 0);
    print $header, $namez, pad4(length($header) + length($namez)), $data, pad4(length($data))
        or die "newc-cpio: cannot write: $!\n";
}

binmode STDOUT;
while (my $path = <STDIN>) {
    chomp $path;
    next if $path eq '' or $path eq '.';
    $path =~ s{^\./}{};
    my @st = lstat($path) or die "newc-cpio: $path: $!\n";
    my $mode = $st[2];
    if (-l _) {
        my $target = readlink($path) // die "newc-cpio: readlink $path: $!\n";
        entry($path, $mode, $target, 1, 0, 0);
    } elsif (-d _) {
        entry($path, $mode, '', 2, 0, 0);
    } elsif (-f _) {
        open(my $fh, '<:raw', $path) or die "newc-cpio: $path: $!\n";
        local $/;
        my $data = <$fh> // '';
        close($fh);
        entry($path, $mode, $data, 1, 0, 0);
    } else {
        die "newc-cpio: $path is neither a directory, a regular file nor a symbolic link\n";
    }
}
for my $node (@ARGV) {
    my ($path, $perm, $kind, $major, $minor) = split(/:/, $node);
    die "newc-cpio: bad device node '$node' (want PATH:MODE:c|b:MAJOR:MINOR)\n"
        unless defined $minor and $kind =~ /^[cb]$/;
    my $type = $kind eq 'c' ? 0020000 : 0060000;
    entry($path, $type | oct($perm), '', 1, $major, $minor);
}
entry('TRAILER!!!', 0, '', 1, 0, 0);
