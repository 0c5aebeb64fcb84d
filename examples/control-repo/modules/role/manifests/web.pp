# A web server of the web project.
class role::web {
  file { "${::opslab_root}/site":
    ensure  => file,
    content => "${::site_name} in ${::cluster}\n",
  }
}
