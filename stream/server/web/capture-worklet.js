// AudioWorklet processor: copies the microphone's first channel in blocks of
// about 20 ms (at the context's own sample rate) and posts them to the page,
// which sends them as f32le frames. The server resamples to 16 kHz.
class SpoofwatchCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    // 20 ms at the context rate (e.g. 960 samples at 48 kHz): small enough
    // to stay live, large enough to keep the message rate modest.
    this.block = new Float32Array(Math.max(128, Math.round(sampleRate / 50)));
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const channel = input[0];
      let offset = 0;
      while (offset < channel.length) {
        const n = Math.min(channel.length - offset, this.block.length - this.filled);
        this.block.set(channel.subarray(offset, offset + n), this.filled);
        this.filled += n;
        offset += n;
        if (this.filled === this.block.length) {
          this.port.postMessage(this.block.slice(0));
          this.filled = 0;
        }
      }
    }
    return true; // keep running while the page captures
  }
}

registerProcessor("spoofwatch-capture", SpoofwatchCapture);
