#include <fltport/port.hpp>

#include <algorithm>

namespace fltport {

PortSecurity PortSecurity::with_mode(uid_t owner, gid_t group, mode_t mode) {
  PortSecurity security;
  security.owner_ = owner;
  security.group_ = group;
  security.mode_ = mode & 0777;
  return security;
}

PortSecurity& PortSecurity::allow_uid(uid_t uid) {
  uids_.push_back(uid);
  return *this;
}

PortSecurity& PortSecurity::allow_gid(gid_t gid) {
  gids_.push_back(gid);
  return *this;
}

bool PortSecurity::admits(const PeerCredentials& peer) const {
  if (peer.uid == 0) return true;
  auto in_group = [&peer](gid_t gid) {
    return peer.gid == gid || std::find(peer.groups.begin(), peer.groups.end(), gid) != peer.groups.end();
  };
  if (std::find(uids_.begin(), uids_.end(), peer.uid) != uids_.end()) return true;
  if (std::any_of(gids_.begin(), gids_.end(), in_group)) return true;
  // File-permission order: the owner's bits decide for the owner, the group's for members.
  if (peer.uid == owner_) return (mode_ & 0200) != 0;
  if (in_group(group_)) return (mode_ & 0020) != 0;
  return (mode_ & 0002) != 0;
}

}  // namespace fltport
