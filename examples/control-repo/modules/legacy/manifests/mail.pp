# A mail relay classified the way Puppet's old LDAP terminus did.
class legacy::mail {
  file { "${::opslab_root}/relay":
    ensure  => file,
    content => "${::relay}\n",
  }
}
