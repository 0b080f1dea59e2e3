# What nestmon's Linux test initramfs runs when the kernel command line
# gives no commands after " -- " (sourced by /init, which powers off after
# it): a short look at the machine as the guest sees it.
echo "== uname -a"; uname -a
echo "== /proc/cpuinfo"; grep -E '^(model name|flags|cpu MHz|bogomips)' /proc/cpuinfo
echo "== free"; free
echo "== date"; date -u
echo "== uptime"; cat /proc/uptime
echo "== clocksource"; cat /sys/devices/system/clocksource/clocksource0/current_clocksource
echo "== interrupts"; cat /proc/interrupts
echo "== mounts"; cat /proc/mounts
echo "== busybox"; busybox | head -n 1
