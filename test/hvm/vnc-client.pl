#!/usr/bin/perl
# A real VNC client for the HVM tests (Debian's libnet-vnc-perl):
#   vnc-client.pl HOST PORT PASSWORD OUT.png [KEYS]
# logs in with VNC authentication, prints "name WIDTHxHEIGHT", saves one
# framebuffer capture as OUT.png, then types KEYS ("\n" = Return; Shift is
# pressed for the characters that need it on a US keyboard).
use strict;
use warnings;
use Net::VNC;

my ($host, $port, $password, $out, $keys) = @ARGV;
die "usage: vnc-client.pl HOST PORT PASSWORD OUT.png [KEYS]\n" unless defined $out;
my $vnc = Net::VNC->new({ hostname => $host, port => $port, password => $password });
$vnc->depth(24);
eval { $vnc->login; 1 } or do { print STDERR "login failed: $@"; exit 3 };
printf "%s %dx%d\n", $vnc->name, $vnc->width, $vnc->height;
my $img = $vnc->capture;
$img->save($out);
if (defined $keys) {
  $keys =~ s/\\n/\n/g;
  my $shifted = '~!@#$%^&*()_+{}|:"<>?';
  for my $c (split //, $keys) {
    if ($c eq "\n") { $vnc->send_key_event(0xff0d); next; }
    my $shift = ($c =~ /[A-Z]/ || index($shifted, $c) >= 0);
    $vnc->send_key_event_down(0xffe1) if $shift;
    $vnc->send_key_event(ord $c);
    $vnc->send_key_event_up(0xffe1) if $shift;
    select(undef, undef, undef, 0.05);
  }
}
# QEMU paces key events; give the last ones time before the connection ends.
select(undef, undef, undef, 1.0) if defined $keys;
print "done\n";
