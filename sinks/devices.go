package sinks

// DeviceInfo is what the gateway knows about a device beyond its id: the
// name and type people gave it in Wittra (empty when unknown).
type DeviceInfo struct {
	Name string
	Type string
}

// Directory answers what is known about a device. Sinks that show names
// (Cumulocity child devices, Home Assistant discovery, state topics) take
// one; a nil Directory means no names are known. Implementations must answer
// from memory, never blocking delivery.
type Directory interface {
	Device(project, device string) (DeviceInfo, bool)
}

// DirectoryNotifier is implemented by a Directory whose answers change
// while the gateway runs (names edited in the Wittra portal). A sink that
// shows names somewhere they persist (Home Assistant configs, Cumulocity
// inventory) can wait on Changed to publish them again instead of waiting
// for the device's next message. Sinks test for it with a type assertion.
type DirectoryNotifier interface {
	Directory
	// Changed returns a channel that is closed at the next change of any
	// answer; call it again after it fires for the change after that.
	Changed() <-chan struct{}
}
