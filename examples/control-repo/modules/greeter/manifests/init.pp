# A tiny web service on a loopback port, serving one page that says $greeting.
# Safe to apply as an unprivileged user: its files live below the opslab_root
# fact, it listens on 127.0.0.1 only, and it runs as whoever runs Puppet.
class greeter (
  String $greeting = 'Hello',
  Integer[1024, 65535] $port = 8181,
) {
  $dir = "${::opslab_root}/greeter"

  file { [$dir, "${dir}/www"]:
    ensure => directory,
  }
  file { "${dir}/www/index.html":
    ensure  => file,
    content => "${greeting}\n",
  }
  # The service reads its port from here; a new port restarts it.
  file { "${dir}/port":
    ensure  => file,
    content => "${port}\n",
  }
  service { 'greeter':
    ensure    => running,
    provider  => base,
    start     => "/bin/sh -c 'python3 -m http.server ${port} --bind 127.0.0.1 --directory ${dir}/www >${dir}/log 2>&1 & echo \$! >${dir}/pid'",
    status    => "/bin/sh -c 'kill -0 \"\$(cat ${dir}/pid)\"' 2>/dev/null",
    stop      => "/bin/sh -c 'kill \"\$(cat ${dir}/pid)\"'",
    subscribe => File["${dir}/port"],
  }
}
