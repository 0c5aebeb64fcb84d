# The message of the day; its text is a class parameter from the directory.
class motd (String $message = 'Welcome') {
  file { "${::opslab_root}/motd":
    ensure  => file,
    content => "${message}\n",
  }
}
