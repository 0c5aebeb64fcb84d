# What every host gets (from the directory's default entry).
class base {
  file { "${::opslab_root}/base.conf":
    ensure  => file,
    content => "environment=${environment}\nntp_server=${::ntp_server}\ncluster=${::cluster}\nmonitored=${::monitored}\n",
  }
}
