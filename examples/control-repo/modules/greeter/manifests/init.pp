# A tiny web service, serving one page that says $greeting on $port of $bind.
# Safe to apply as an unprivileged user: its files live below the opslab_root
# fact, by default it listens on 127.0.0.1 only, and it runs as whoever runs
# Puppet. An instance sets bind to 0.0.0.0 to answer on its own address.
class greeter (
  String $greeting = 'Hello',
  Integer[1024, 65535] $port = 8181,
  Pattern[/\A[0-9]{1,3}(\.[0-9]{1,3}){3}\z/] $bind = '127.0.0.1',
) {
  $dir = "${::opslab_root}/greeter"

  file { [$dir, "${dir}/www"]:
    ensure => directory,
  }
  file { "${dir}/www/index.html":
    ensure  => file,
    content => "${greeting}\n",
  }
  # The service reads its address and port from here; a change restarts it.
  file { "${dir}/port":
    ensure  => file,
    content => "${bind}:${port}\n",
  }
  service { 'greeter':
    ensure    => running,
    provider  => base,
    start     => "/bin/sh -c 'python3 -m http.server ${port} --bind ${bind} --directory ${dir}/www >${dir}/log 2>&1 & echo \$! >${dir}/pid'",
    status    => "/bin/sh -c 'kill -0 \"\$(cat ${dir}/pid)\"' 2>/dev/null",
    stop      => "/bin/sh -c 'kill \"\$(cat ${dir}/pid)\"'",
    subscribe => File["${dir}/port"],
  }
}
